"""Deterministic identifiers that tie a provider's delivery report back to a workflow without a database.

The client reference `<mailing id>/<E.164>/<step>` goes to the provider with each message and comes back in
its report; the gateway derives the recipient workflow id and the step from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAILING_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_CLIENT_REF = re.compile(
    r"^(?P<mailing>[a-z0-9][a-z0-9-]{0,47})/(?P<phone>\+\d{6,15})/(?P<step>\d{1,2})(?:\.(?P<attempt>[1-9]))?$"
)


def mailing_workflow_id(mailing_id: str) -> str:
    return f"mailing-{mailing_id}"


def recipient_workflow_id(mailing_id: str, phone: str) -> str:
    return f"mailing-{mailing_id}/{phone}"


@dataclass(frozen=True)
class ClientRef:
    """One message of one cascade step: what the provider echoes back. `attempt`: which of the step's provider
    accounts sent it (0, the first, keeps the reference as it was before failover existed)."""

    mailing_id: str
    phone: str
    step: int
    attempt: int = 0

    def __str__(self) -> str:
        suffix = f".{self.attempt}" if self.attempt else ""
        return f"{self.mailing_id}/{self.phone}/{self.step}{suffix}"

    @property
    def workflow_id(self) -> str:
        return recipient_workflow_id(self.mailing_id, self.phone)

    @classmethod
    def parse(cls, text: str) -> ClientRef:
        """Raise ValueError for anything kaskad did not issue."""
        match = _CLIENT_REF.fullmatch(text)
        if not match:
            raise ValueError(f"not a kaskad client reference: {text[:120]!r}")
        return cls(match["mailing"], match["phone"], int(match["step"]), int(match["attempt"] or 0))


def send_task_queue(task_queue: str, provider: str) -> str:
    """The task queue a provider's sends go through: one per provider, so the server caps each one's rate."""
    return f"{task_queue}-send-{provider}"
