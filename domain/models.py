"""The data that crosses workflow and activity boundaries (serialised by the pydantic data converter).

One input model per workflow and per activity, so fields can be added compatibly.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from domain.channels import definition
from domain.refs import ClientRef
from domain.schedule import Schedule, Window
from domain.spec import Button, CascadePlan, MailingSpec, Step
from domain.status import CascadeStatus, Channel, MessageStatus
from domain.whatsapp import WhatsAppTemplate


class MailingInput(BaseModel):
    mailing_id: str
    spec: MailingSpec
    resume: MailingResume | None = None


class ImportRequest(BaseModel):
    mailing_id: str
    spec: MailingSpec


class RejectedRow(BaseModel):
    row: int
    value: str
    reason: str


class ImportReport(BaseModel):
    """What the importer did with every row; the full rejected list is in `rejected_file`."""

    rows: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_by_reason: dict[str, int] = Field(default_factory=dict)
    rejected_sample: list[RejectedRow] = Field(default_factory=list)
    zone_fallback: int = 0  # subscribers whose zones share no allowed window: the fallback zone is used
    # Where the imported list is: `ledger:<mailing id>` (every worker reads it from the ledger), or a file
    # path for lists imported before the ledger existed.
    stored_list: Path | None = None
    rejected_file: Path | None = None


LEDGER_LIST = "ledger:"


def ledger_list(mailing_id: str) -> Path:
    """The stored-list reference of a list kept in the ledger."""
    return Path(LEDGER_LIST + mailing_id)


def ledger_list_mailing(stored_list: Path) -> str | None:
    """The mailing whose ledger list `stored_list` names, or None when it is a file of an older import."""
    text = str(stored_list)
    return text.removeprefix(LEDGER_LIST) if text.startswith(LEDGER_LIST) else None


class DispatchRequest(BaseModel):
    """One chunk of the dispatch: start the stored recipients from `position`, paced, until a limit."""

    mailing_id: str
    plan: CascadePlan
    stored_list: Path
    position: int = 0
    limit: int = 500  # at most this many recipients in this chunk
    interval: timedelta | None = None  # between two starts (the speed); None: the first step's provider rate
    not_before: datetime | None = None  # the first start waits for this moment (the pace of the last chunk)
    until: datetime | None = None  # no start at or after this moment (window end, end date)
    window: Window | None = None  # the mailing's current window (fixed zone), handed to each recipient


class DispatchResult(BaseModel):
    position: int  # the next stored recipient to start
    started: int
    already_running: int
    next_start: datetime | None = None  # the earliest moment the next start may happen
    exhausted: bool = False  # the stored list has no more recipients


class WindowRequest(BaseModel):
    schedule: Schedule
    zones: list[str]
    at: datetime
    end_at: datetime | None = None


class Control(BaseModel):
    """A mailing's pause/cancel state as its recipients learn it; a higher version supersedes a lower."""

    version: int = 0
    paused: bool = False
    cancelled: bool = False


class BroadcastRequest(BaseModel):
    mailing_id: str
    control: Control
    upto: int | None = None  # the stored-list positions below this were dispatched; None: the whole list


class RecipientInput(BaseModel):
    mailing_id: str
    phone: str
    variables: dict[str, str] = Field(default_factory=dict)
    plan: CascadePlan
    zones: list[str] | None = None  # the subscriber's candidate zones (schedule in subscriber's local time)
    window: Window | None = None  # an allowed window known at start (saves asking for one)


class SendRequest(BaseModel):
    """One message to one provider; `client_ref` makes a retried send recognisable."""

    client_ref: str
    provider: str
    channel: Channel
    phone: str
    sender: str
    text: str
    image_url: str | None = None
    button: Button | None = None
    template: WhatsAppTemplate | None = None  # whatsapp: the approved template, its parameters rendered
    ttl: timedelta
    not_after: datetime | None = None  # the end date: nothing leaves from this moment on
    # An earlier send of this message may have reached the provider (its worker died mid-request): only a
    # provider that de-duplicates by `client_ref` may be asked again.
    after_ambiguous: bool = False
    # The activity retries an outage itself (the workflow runs it once). False: it makes one request and
    # leaves retries to Temporal, as workflows started before issue 9 schedule it.
    retries_inside: bool = False
    # Another of the step's accounts follows this one: an account the provider refuses (401/403) gives up at
    # once, and an outage after `give_up_after` (not the full hour), so that the step fails over.
    fail_over: bool = False
    give_up_after: timedelta | None = None

    @classmethod
    def for_step(
        cls, ref: ClientRef, plan: CascadePlan, step: Step, text: str, variables: Mapping[str, str] | None = None
    ) -> SendRequest:
        """The step's message to `ref`'s recipient: `text` rendered, the template's parameters rendered from
        `variables` (MissingVariableError when one is missing, as for the text)."""
        return cls(
            client_ref=str(ref),
            provider=plan.provider_for(step),
            channel=step.channel,
            phone=ref.phone,
            sender=step.sender,
            text=text,
            image_url=step.image_url,
            button=step.button,
            template=step.template.rendered(variables or {}) if step.template else None,
            ttl=step.wait,
            not_after=plan.end_at,
        )


class SendResult(BaseModel):
    """The provider accepted the message (`message_id`) or refused it for good (`rejected`).

    `unconfirmed`: the request may or may not have reached a provider that does not de-duplicate (its
    answer was lost); it is not sent again, and the step's report — or its timeout — decides.
    """

    message_id: str | None = None
    rejected: str | None = None
    unconfirmed: bool = False


class SendProgress(BaseModel):
    """The send activity's heartbeat: whether its request may be at the provider right now.

    Recorded on the server before every request, so when a worker dies mid-send the workflow learns (from
    the heartbeat timeout's details) that the message may have left and never sends it twice."""

    posting: bool = False


# Report texts are bounded before they enter a workflow's history: an authenticated sender must not be able
# to grow histories by a megabyte a report. Longer message ids are refused; longer errors are cut.
MESSAGE_ID_MAX = 200
ERROR_MAX = 300


class DeliveryReport(BaseModel):
    """A provider's status report for one step, as signalled by the webhook gateway."""

    step: int
    status: MessageStatus
    message_id: str | None = Field(default=None, max_length=MESSAGE_ID_MAX)
    error: str | None = Field(default=None, max_length=ERROR_MAX)
    at: datetime | None = None
    account: str | None = None  # the provider account whose webhook URL brought it; None from older gateways


class StepState(BaseModel):
    """Everything known about one channel attempt."""

    channel: Channel
    expect: MessageStatus
    status: MessageStatus = MessageStatus.PENDING
    client_ref: str
    message_id: str | None = None
    error: str | None = None
    handed_over: bool = False
    unconfirmed: bool = False  # handed over as far as anyone can tell; only a report can confirm it
    timed_out: bool = False
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failed_at: datetime | None = None
    reports: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status.reached(self.expect)

    @property
    def settled(self) -> bool:
        """No report can still change this step (delivered is final where the channel never reads)."""
        if not self.handed_over or self.status.is_final:
            return True
        return self.status is MessageStatus.DELIVERED and not definition(self.channel).reports_reading

    def milestones(self, number: int) -> list[str]:
        """Values for the `StepMilestones` search attribute, e.g. `1:viber:delivered`."""
        reached = [
            ("sent", self.handed_over),
            ("delivered", self.status.reached(MessageStatus.DELIVERED)),
            ("read", self.status is MessageStatus.READ),
            ("undelivered", self.status is MessageStatus.UNDELIVERED),
            ("not_sent", self.status is MessageStatus.NOT_SENT),
        ]
        return [f"{number}:{self.channel.value}:{name}" for name, on in reached if on]


class RecipientState(BaseModel):
    """The whole state of one recipient's cascade, as the `state` query returns it."""

    mailing_id: str
    phone: str
    status: CascadeStatus = CascadeStatus.PENDING
    delivered_channel: Channel | None = None
    current_step: int = 0
    steps: list[StepState]


class MailingCounts(BaseModel):
    """Per-mailing statistics counted from visibility (exact once visibility has caught up)."""

    outcomes: dict[str, int]
    delivered_by_channel: dict[str, int]
    channels: dict[str, dict[str, int]]
    finished: int = 0  # recipients with a final cascade status, or whose workflow was closed by hand
    closed: int = 0  # recipient workflows closed (late-report window over); counted only when until_closed


class MailingSummary(BaseModel):
    mailing_id: str
    name: str
    status: str
    error: str | None = None
    cascade: list[Channel] = Field(default_factory=list)
    recipients: dict[str, int]
    invalid_by_reason: dict[str, int] = Field(default_factory=dict)
    rejected_sample: list[RejectedRow] = Field(default_factory=list)
    rejected_file: Path | None = None
    outcomes: dict[str, int] = Field(default_factory=dict)
    delivered_by_channel: dict[str, int] = Field(default_factory=dict)
    channels: dict[str, dict[str, int]] = Field(default_factory=dict)
    dispatched: int = 0  # recipient workflows started
    not_started: int = 0  # valid recipients never started (end date reached, cancelled); counted as not_sent
    zone_fallback: int = 0  # subscribers sent in the fallback zone: their zones share no allowed window
    schedule: str = ""
    start_at: datetime | None = None
    end_at: datetime | None = None
    speed: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProgressRequest(BaseModel):
    mailing_id: str
    cascade: list[Channel]
    expected: int
    last_finished: int = -1
    until_closed: bool = False  # every cascade is decided: wait for the recipient workflows to close
    last_closed: int = -1


class MailingResume(BaseModel):
    """What a mailing carries over when it continues as new (its history grew long while it waited)."""

    import_report: ImportReport
    counts: MailingCounts | None = None
    started_at: datetime
    status: str
    position: int = 0
    next_start: datetime | None = None
    dispatched: bool = False
    end_reached: bool = False
    control: Control = Field(default_factory=Control)
    broadcast: int = 0
    recorded_status: str | None = None  # the last status written to the ledger


# --- ledger records (local activities of the workflows; see activities/ledger.py) --------------------------


class StepSend(BaseModel):
    """How a step's message was sent, for the ledger's cost figures (the send activity records it too)."""

    sender: str
    encoding: str | None = None  # SMS only
    parts: int | None = None  # SMS only


class RecipientRecord(BaseModel):
    """A recipient workflow's final state, as it closes."""

    state: RecipientState
    accounts: list[str]  # the provider account of each step
    closed_at: datetime
    sends: list[StepSend | None] = Field(default_factory=list)  # per step; None where nothing was sent


class MailingStatusRecord(BaseModel):
    mailing_id: str
    status: str
    at: datetime


class MailingFinalRecord(BaseModel):
    summary: MailingSummary
    dispatched: int
