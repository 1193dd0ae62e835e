"""Message and cascade statuses, and the forward-only rule that makes duplicate reports harmless."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """The channels' names, as histories, search attributes and the ledger hold them; what each channel is
    (its rules, its statuses, its limits) is its definition in domain/channels.py."""

    VIBER = "viber"
    SMS = "sms"
    WHATSAPP = "whatsapp"


class MessageStatus(StrEnum):
    """Status of one channel attempt. Ordered: a report may only move a message forward."""

    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    NOT_SENT = "not_sent"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """Final statuses are sticky: nothing a provider says later changes them."""
        return self in (MessageStatus.READ, MessageStatus.UNDELIVERED, MessageStatus.NOT_SENT)

    def reached(self, expected: MessageStatus) -> bool:
        """True when this status satisfies a step that expects `expected` (read implies delivered)."""
        if expected is MessageStatus.DELIVERED:
            return self in (MessageStatus.DELIVERED, MessageStatus.READ)
        return self is expected


# DELIVERED → UNDELIVERED is not a move: once delivered, a later failure report is stale.
_RANK = {
    MessageStatus.PENDING: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 2,
    MessageStatus.NOT_SENT: 2,
    MessageStatus.READ: 3,
}


_PROVIDER_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.UNDELIVERED)


def advance(current: MessageStatus, reported: MessageStatus) -> MessageStatus:
    """The status after a report: forward moves only, final statuses stick — except `not_sent`, which a
    provider's report overturns (the provider accepted it after all, e.g. its answers were lost)."""
    if current is MessageStatus.NOT_SENT and reported in _PROVIDER_STATUSES:
        return reported
    if current.is_final or reported.rank <= current.rank:
        return current
    return reported


class CascadeStatus(StrEnum):
    """Status of one recipient across the whole cascade (the `CascadeStatus` search attribute)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    NOT_SENT = "not_sent"

    @property
    def is_final(self) -> bool:
        return self in (CascadeStatus.DELIVERED, CascadeStatus.UNDELIVERED, CascadeStatus.NOT_SENT)


FINAL_CASCADE_STATUSES = tuple(s for s in CascadeStatus if s.is_final)
