"""Custom search attributes: the Temporal UI filters on them and mailing statistics are counted from them."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

MAILING_ID = SearchAttributeKey.for_keyword("MailingId")
MAILING_STATUS = SearchAttributeKey.for_keyword("MailingStatus")
CASCADE_STATUS = SearchAttributeKey.for_keyword("CascadeStatus")
DELIVERED_CHANNEL = SearchAttributeKey.for_keyword("DeliveredChannel")
STEP_MILESTONES = SearchAttributeKey.for_keyword_list("StepMilestones")

ALL: tuple[SearchAttributeKey[Any], ...] = (
    MAILING_ID,
    MAILING_STATUS,
    CASCADE_STATUS,
    DELIVERED_CHANNEL,
    STEP_MILESTONES,
)
