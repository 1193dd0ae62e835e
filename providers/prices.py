"""What a message costs: an optional price per provider account and channel (per SMS part for SMS).

In the accounts file, next to the account's credentials:

    [infobip-main]
    type = "infobip"
    price = { sms = 2.35, viber = 0.95 }   # in KASKAD_CURRENCY; SMS: per part

and for the built-in sandbox, KASKAD_SANDBOX_PRICES='{"sms": 2.35, "viber": 0.95}'. A channel without a price
costs nothing known: reports and the estimate say "no price" rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.channels import DEFINITIONS, known
from providers.accounts import AccountError


@dataclass(frozen=True)
class PriceBook:
    """Prices by account, then channel; `currency` is what every figure is in."""

    prices: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    currency: str = "RUB"

    def unit(self, account: str | None, channel: str | None) -> Decimal | None:
        """The price of one message (one SMS part), or None when none is configured."""
        if account is None or channel is None:
            return None
        return self.prices.get(account, {}).get(channel)

    def cost(self, account: str | None, channel: str | None, parts: int | None) -> Decimal | None:
        """The cost of one message as sent: SMS per part (one when unknown), any other channel per message."""
        unit = self.unit(account, channel)
        if unit is None:
            return None
        rules = known(channel)
        return unit * max(parts or 1, 1) if rules is not None and rules.counts_parts else unit


def parse_prices(raw: Any, where: str) -> dict[str, Decimal]:
    """`{channel: price}` from the accounts file or the environment, checked: known channels, prices ≥ 0."""
    if not isinstance(raw, Mapping):
        raise AccountError(f"{where}: expected a table like {{ sms = 2.35, viber = 0.95 }}")
    prices: dict[str, Decimal] = {}
    for channel, value in raw.items():
        if known(channel) is None:
            raise AccountError(f"{where}.{channel}: not a channel ({', '.join(c.value for c in DEFINITIONS)})")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise AccountError(f"{where}.{channel}: expected a number, got {value!r}")
        try:
            price = Decimal(str(value))
        except InvalidOperation as exc:
            raise AccountError(f"{where}.{channel}: expected a number, got {value!r}") from exc
        if not price.is_finite() or price < 0:
            raise AccountError(f"{where}.{channel}: a price must be a number ≥ 0, got {value!r}")
        prices[channel] = price
    return prices
