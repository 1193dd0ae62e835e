"""Deterministic outcomes by channel and the last digit of the number (the table in the README)."""

from __future__ import annotations

from domain.channels import UnsupportedChannel
from domain.status import Channel, MessageStatus

# Reports the sandbox posts, in order, after accepting a message. An empty tuple: no report at all.
_VIBER: dict[str, tuple[MessageStatus, ...]] = {
    **dict.fromkeys("0123", (MessageStatus.DELIVERED, MessageStatus.READ)),
    **dict.fromkeys("45", (MessageStatus.DELIVERED,)),
    **dict.fromkeys("67", (MessageStatus.UNDELIVERED,)),
    **dict.fromkeys("89", ()),
}
_SMS: dict[str, tuple[MessageStatus, ...]] = {
    **dict.fromkeys("012345678", (MessageStatus.DELIVERED,)),
    "9": (MessageStatus.UNDELIVERED,),
}

_WHATSAPP: dict[str, tuple[MessageStatus, ...]] = {
    **dict.fromkeys("01234", (MessageStatus.DELIVERED, MessageStatus.READ)),
    **dict.fromkeys("56", (MessageStatus.DELIVERED,)),
    "7": (MessageStatus.UNDELIVERED,),
    **dict.fromkeys("89", ()),
}

# A channel's rules and its error code for undelivered messages; a channel without them is refused (400).
RULES: dict[Channel, dict[str, tuple[MessageStatus, ...]]] = {
    Channel.VIBER: _VIBER,
    Channel.SMS: _SMS,
    Channel.WHATSAPP: _WHATSAPP,
}
ERROR_CODES = {Channel.VIBER: "not-viber-user", Channel.SMS: "absent-subscriber", Channel.WHATSAPP: "not-whatsapp-user"}
CHANNELS = frozenset(RULES)


def planned_reports(channel: Channel, phone: str) -> tuple[MessageStatus, ...]:
    """The statuses the sandbox will report for a message on `channel` to `phone`."""
    table = RULES.get(channel)
    if table is None:
        raise UnsupportedChannel(f"the sandbox does not send {channel.value}")
    return table[phone[-1]]
