"""The forecast before launch: what a mailing will send and cost, from the list and the ledger's history.

Step 1 goes to every valid recipient. Step k+1 goes to the recipients whose step-k message did not reach the
step's expected status; that share comes from what the step's provider account did on that channel in the
last N finished mailings that used it (`observed_outcomes`):

    rate = messages that reached the expected status (delivered or read; for `expect = "read"` only read)
           / messages handed over (sent, delivered, read or undelivered; not_sent ones never left)

counted by each message's final status in the ledger (late reports included). The expected volume uses the
pooled rate over those mailings; the range uses the lowest and the highest per-mailing rate. Without any
history the rate is unknown: the range runs from the best case (every message reaches its status, so no
fallback is sent) to the worst (none does, so every recipient falls through to the next step), and there is
no expected value. SMS parts are counted exactly per recipient for the upper bound; a smaller volume is
charged at the step's average parts per message (which recipients fall through is not known in advance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import Connection, func, select

from domain.channels import definition, known
from domain.status import Channel, MessageStatus
from ledger.schema import mailings, messages
from providers.prices import PriceBook

HANDED_OVER = (
    MessageStatus.SENT.value,
    MessageStatus.DELIVERED.value,
    MessageStatus.READ.value,
    MessageStatus.UNDELIVERED.value,
)
DEFAULT_HISTORY = 10  # finished mailings per account and channel


def reached_statuses(expect: MessageStatus) -> tuple[str, ...]:
    """The final statuses that satisfy a step expecting `expect` (read implies delivered)."""
    if expect is MessageStatus.READ:
        return (MessageStatus.READ.value,)
    return (MessageStatus.DELIVERED.value, MessageStatus.READ.value)


@dataclass(frozen=True)
class MailingOutcome:
    """One past mailing's messages on one account and channel: handed over, and by final status."""

    mailing_id: str
    created_at: datetime
    finished_at: datetime
    statuses: dict[str, int]

    @property
    def handed_over(self) -> int:
        return sum(self.statuses.values())

    def reached(self, expect: MessageStatus) -> int:
        return sum(self.statuses.get(status, 0) for status in reached_statuses(expect))


@dataclass(frozen=True)
class Outcomes:
    """What an account did on a channel over its last finished mailings, judged against one expectation."""

    account: str
    channel: str
    expect: MessageStatus
    mailings: tuple[MailingOutcome, ...] = ()

    @property
    def handed_over(self) -> int:
        return sum(m.handed_over for m in self.mailings)

    @property
    def reached(self) -> int:
        return sum(m.reached(self.expect) for m in self.mailings)

    @property
    def known(self) -> bool:
        return self.handed_over > 0

    @property
    def rate(self) -> Fraction | None:
        """The pooled rate: all reached / all handed over; None without history."""
        return Fraction(self.reached, self.handed_over) if self.known else None

    @property
    def lowest(self) -> Fraction:
        """The lowest per-mailing rate (0 without history: the worst case)."""
        return min((Fraction(m.reached(self.expect), m.handed_over) for m in self.mailings), default=Fraction(0))

    @property
    def highest(self) -> Fraction:
        """The highest per-mailing rate (1 without history: the best case)."""
        return max((Fraction(m.reached(self.expect), m.handed_over) for m in self.mailings), default=Fraction(1))

    @property
    def since(self) -> datetime | None:
        return min((m.created_at for m in self.mailings), default=None)

    def basis(self) -> str:
        """What the figures rest on, in one phrase."""
        if not self.known:
            return (
                f"no history of {self.channel} via {self.account}: range from the best case (all {self.expect.value},"
                " no fallback) to the worst (none, everyone falls through)"
            )
        plural = "s" * (len(self.mailings) != 1)
        assert self.since is not None
        return (
            f"based on {self.handed_over:,} {_channel_name(self.channel)} messages via {self.account} in"
            f" {len(self.mailings)} mailing{plural} since {self.since.date().isoformat()}"
        )


def observed_outcomes(
    conn: Connection, wanted: Iterable[tuple[str, str]], last: int = DEFAULT_HISTORY
) -> dict[tuple[str, str], list[MailingOutcome]]:
    """For each (account, channel) in `wanted`: its last `last` finished mailings, newest first, with the
    handed-over messages counted by final status. One grouped scan of the messages of those accounts."""
    pairs = set(wanted)
    found: dict[tuple[str, str], dict[str, MailingOutcome]] = {pair: {} for pair in pairs}
    if not pairs or last <= 0:
        return {pair: [] for pair in pairs}
    query = (
        select(
            messages.c.account,
            messages.c.channel,
            mailings.c.id,
            mailings.c.created_at,
            mailings.c.finished_at,
            messages.c.status,
            func.count(),
        )
        .select_from(messages.join(mailings, mailings.c.id == messages.c.mailing_id))
        .where(
            messages.c.account.in_(sorted({account for account, _ in pairs})),
            messages.c.channel.in_(sorted({channel for _, channel in pairs})),
            messages.c.status.in_(HANDED_OVER),
            mailings.c.finished_at.is_not(None),
        )
        .group_by(
            messages.c.account,
            messages.c.channel,
            mailings.c.id,
            mailings.c.created_at,
            mailings.c.finished_at,
            messages.c.status,
        )
    )
    for account, channel, mailing_id, created_at, finished_at, status, count in conn.execute(query):
        per_mailing = found.get((account, channel))
        if per_mailing is None:
            continue
        outcome = per_mailing.setdefault(mailing_id, MailingOutcome(mailing_id, created_at, finished_at, {}))
        outcome.statuses[status] = count
    return {
        pair: sorted(per_mailing.values(), key=lambda m: (m.finished_at, m.mailing_id), reverse=True)[:last]
        for pair, per_mailing in found.items()
    }


@dataclass
class StepLoad:
    """One step's messages if every valid recipient reached it: the upper bound, with exact SMS parts."""

    index: int  # 0-based, as in `steps.N`
    channel: Channel
    account: str
    expect: MessageStatus
    messages: int = 0
    parts: int = 0  # SMS: the parts of every recipient's rendered text; others: one per message
    encodings: dict[str, int] = field(default_factory=dict)  # SMS: messages per encoding


@dataclass(frozen=True)
class Span:
    """A figure as a range and, when the history allows one, an expected value."""

    low: Fraction
    expected: Fraction | None
    high: Fraction

    def scaled(self, factor: Fraction) -> Span:
        return Span(self.low * factor, None if self.expected is None else self.expected * factor, self.high * factor)


@dataclass(frozen=True)
class StepForecast:
    load: StepLoad
    outcomes: Outcomes
    unit: Decimal | None
    messages: Span  # recipients the step is expected to be sent to
    parts: Span  # SMS parts (messages for other channels)
    cost: Span | None  # None: no price configured


@dataclass(frozen=True)
class Forecast:
    recipients: int
    currency: str
    history: int
    steps: list[StepForecast]
    unreached: Span  # recipients expected to end without any step reaching its status

    @property
    def priced(self) -> list[StepForecast]:
        return [step for step in self.steps if step.cost is not None]

    @property
    def cost(self) -> Span | None:
        """The total over the steps that have a price; None when none has."""
        costs = [step.cost for step in self.steps if step.cost is not None]
        if not costs:
            return None
        expected = [c.expected for c in costs]
        return Span(
            sum((c.low for c in costs), Fraction(0)),
            None if any(e is None for e in expected) else sum((e for e in expected if e is not None), Fraction(0)),
            sum((c.high for c in costs), Fraction(0)),
        )


def forecast(
    loads: Sequence[StepLoad],
    history: dict[tuple[str, str], list[MailingOutcome]],
    prices: PriceBook,
    recipients: int,
    window: int,
) -> Forecast:
    """Propagate the recipients through the cascade: each step gets the previous step's share not reached."""
    reaching = Span(Fraction(recipients), Fraction(recipients), Fraction(recipients))
    steps = []
    for load in loads:
        outcomes = Outcomes(
            load.account, load.channel.value, load.expect, tuple(history.get((load.account, load.channel.value), []))
        )
        per_message = Fraction(load.parts, load.messages) if load.messages else Fraction(0)
        parts = reaching.scaled(per_message)
        unit = prices.unit(load.account, load.channel.value)
        cost = None if unit is None else parts.scaled(Fraction(unit))
        steps.append(StepForecast(load, outcomes, unit, reaching, parts, cost))
        rate = outcomes.rate
        reaching = Span(
            reaching.low * (1 - outcomes.highest),
            None if rate is None or reaching.expected is None else reaching.expected * (1 - rate),
            reaching.high * (1 - outcomes.lowest),
        )
    return Forecast(recipients, prices.currency, window, steps, reaching)


# --- presentation -------------------------------------------------------------------------------------------


def money(value: Fraction | Decimal) -> Decimal:
    """A cost to the cent (half up)."""
    return (Decimal(value.numerator) / Decimal(value.denominator) if isinstance(value, Fraction) else value).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


def count(value: Fraction) -> int | float:
    """A message count as shown: whole when it is, else to two decimals."""
    shown = round(float(value), 2)
    return int(shown) if shown == int(shown) else shown


def _channel_name(channel: str) -> str:
    rules = known(channel)
    return rules.label if rules is not None else channel


def _percent(rate: Fraction) -> str:
    return f"{float(rate) * 100:.1f}%"


def _num(value: Fraction) -> str:
    shown = count(value)
    return f"{shown:,.0f}" if shown == int(shown) else f"{shown:,.2f}"


def _cost(value: Fraction) -> str:
    return f"{money(value):,}"


def _span(span: Span, show: Callable[[Fraction], str], unit: str = "") -> str:
    if span.low == span.high:
        return f"{show(span.low)}{unit}"
    if span.expected is None:
        return f"{show(span.low)}..{show(span.high)}{unit} (no expected value: no history)"
    return f"{show(span.expected)}{unit} (range {show(span.low)}..{show(span.high)})"


def render_text(result: Forecast, name: str, rows: int, invalid: int, duplicates: int) -> list[str]:
    """The estimate as the CLI prints it."""
    lines = [
        f"estimate for {name!r} — nothing is sent",
        f"recipients: {result.recipients:,} valid ({rows:,} rows, {invalid:,} invalid, {duplicates:,} duplicates)",
        f"history: each provider account's last {result.history} finished mailing(s) on the step's channel",
    ]
    for step in result.steps:
        load = step.load
        lines.append(f"step {load.index + 1} · {load.channel} via {load.account} · expect {load.expect}")
        upper = f"  if every recipient reached it: {load.messages:,} messages"
        if definition(load.channel).counts_parts:
            encodings = ", ".join(f"{e} {n:,}" for e, n in sorted(load.encodings.items()))
            upper += f", {load.parts:,} SMS parts ({encodings})"
        lines.append(upper)
        price = "no price" if step.unit is None else f"{step.unit} {result.currency}"
        per = " per SMS part" if definition(load.channel).counts_parts and step.unit is not None else ""
        lines.append(f"  unit price: {price}{per}")
        outcomes = step.outcomes
        if outcomes.known:
            assert outcomes.rate is not None
            lines.append(
                f"  observed: {outcomes.reached:,} of {outcomes.handed_over:,} handed over reached {load.expect}"
                f" ({_percent(outcomes.rate)}; per mailing {_percent(outcomes.lowest)}..{_percent(outcomes.highest)})"
                f" — {outcomes.basis()}"
            )
        else:
            lines.append(f"  observed: {outcomes.basis()}")
        lines.append(f"  expected messages: {_span(step.messages, _num)}")
        if definition(load.channel).counts_parts:
            lines.append(f"  expected SMS parts: {_span(step.parts, _num)}")
        lines.append(
            f"  cost: {_span(step.cost, _cost, ' ' + result.currency)}" if step.cost is not None else "  cost: no price"
        )
    lines.append(f"recipients no step is expected to reach: {_span(result.unreached, _num)}")
    total = result.cost
    unpriced = [str(step.load.index + 1) for step in result.steps if step.cost is None]
    if total is None:
        lines.append("total cost: no price configured for any step")
    else:
        note = f" (steps without a price not included: {', '.join(unpriced)})" if unpriced else ""
        lines.append(f"total cost: {_span(total, _cost, ' ' + result.currency)}{note}")
    lines.append(
        "expected = pooled observed rate; range = lowest..highest per-mailing rate, or best..worst case without"
        " history; SMS parts below the upper bound at the step's average per message"
    )
    return lines


def render_json(result: Forecast, name: str, rows: int, invalid: int, duplicates: int) -> dict[str, Any]:
    """The estimate as JSON: counts as numbers (two decimals), money as strings (to the cent)."""

    def span(value: Span | None, show: Callable[[Fraction], Any]) -> dict[str, Any] | None:
        if value is None:
            return None
        return {
            "min": show(value.low),
            "expected": None if value.expected is None else show(value.expected),
            "max": show(value.high),
        }

    def cost(value: Fraction) -> str:
        return str(money(value))

    steps = []
    for step in result.steps:
        load, outcomes = step.load, step.outcomes
        steps.append(
            {
                "step": load.index + 1,
                "channel": load.channel.value,
                "account": load.account,
                "expect": load.expect.value,
                "messages_max": load.messages,
                "sms_parts_max": load.parts if definition(load.channel).counts_parts else None,
                "encodings": load.encodings if definition(load.channel).counts_parts else None,
                "unit_price": None if step.unit is None else str(step.unit),
                "history": {
                    "mailings": [m.mailing_id for m in outcomes.mailings],
                    "since": outcomes.since.isoformat() if outcomes.since else None,
                    "handed_over": outcomes.handed_over,
                    "reached": outcomes.reached,
                    "rate": None if outcomes.rate is None else round(float(outcomes.rate), 4),
                    "rate_min": round(float(outcomes.lowest), 4),
                    "rate_max": round(float(outcomes.highest), 4),
                    "basis": outcomes.basis(),
                },
                "messages": span(step.messages, count),
                "sms_parts": span(step.parts, count) if definition(load.channel).counts_parts else None,
                "cost": span(step.cost, cost),
            }
        )
    return {
        "name": name,
        "currency": result.currency,
        "history_window": result.history,
        "recipients": {"rows": rows, "valid": result.recipients, "invalid": invalid, "duplicates": duplicates},
        "steps": steps,
        "unreached": span(result.unreached, count),
        "total_cost": span(result.cost, cost),
        "unpriced_steps": [step.load.index + 1 for step in result.steps if step.cost is None],
    }
