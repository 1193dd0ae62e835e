"""What each channel is, in one place: content rules and limits, the statuses it reports, its wait range, the
`expect` values it allows, how its size is counted and how `preview` shows it.

Every other module asks `definition(channel)` instead of branching on the channel. Adding a channel means a
new `ChannelDefinition` here (a `Channel` value in domain/status.py, its entry in `DEFINITIONS`), plus the
registrations outside the domain: the adapters that send it (`channels` and the body they post), the sandbox's
outcome table. A channel with no definition is refused (`UnsupportedChannel`), never treated like another one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar

from domain.durations import format_duration
from domain.sms import SmsSize, sms_size
from domain.status import Channel, MessageStatus

if TYPE_CHECKING:  # only for annotations: domain.spec imports this module
    from domain.spec import Button
    from domain.whatsapp import WhatsAppTemplate

MIN_WAIT = timedelta(seconds=1)
MAX_WAIT = timedelta(hours=72)
VIBER_TEXT_MAX = 1000
WHATSAPP_MAX_WAIT = timedelta(minutes=10080)  # the cabinet reference: WhatsApp time-to-live ≤ 10080 min


class UnsupportedChannel(ValueError):
    """A channel kaskad (or a provider) has no definition for: refused, never sent as something else."""


class ChannelDefinition:
    """One channel. Subclasses set the class attributes and the content rule."""

    channel: ClassVar[Channel]
    label: ClassVar[str]  # how people write it: "Viber", "SMS"
    reports_reading: ClassVar[bool]  # whether the channel tells when a message was read
    min_wait: ClassVar[timedelta] = MIN_WAIT
    max_wait: ClassVar[timedelta] = MAX_WAIT
    counts_parts: ClassVar[bool] = False  # billed per part (SMS: GSM-7/UCS-2 segments), else per message
    takes_template: ClassVar[bool] = False  # sends an approved template (WhatsApp) instead of free text

    @property
    def expects(self) -> tuple[MessageStatus, ...]:
        """The `expect` values a step on this channel may name."""
        if self.reports_reading:
            return (MessageStatus.DELIVERED, MessageStatus.READ)
        return (MessageStatus.DELIVERED,)

    def expect_problem(self, expect: MessageStatus) -> str | None:
        if expect in self.expects:
            return None
        if expect is MessageStatus.READ:
            return f"expect: 'read' is invalid for {self.channel.value}: it never reports reading"
        return f"expect: {expect.value!r} is invalid for {self.channel.value}"

    def wait_problem(self, wait: timedelta) -> str | None:
        if self.min_wait <= wait <= self.max_wait:
            return None
        return f"must be between {format_duration(self.min_wait)} and {format_duration(self.max_wait)}"

    def template_problem(self, template: WhatsAppTemplate | None) -> str | None:
        """Why the step's `template` (present or absent) does not fit the channel."""
        if template is not None and not self.takes_template:
            return f"template: {self.channel.value} steps send their text, they take no template"
        if template is None and self.takes_template:
            return f"template: a {self.channel.value} step needs an approved template (name, language, parameters)"
        return None

    def content_problem(self, text: str, image_url: str | None, button: Button | None) -> str | None:
        """Why this content cannot go out on the channel, as `field: reason` (or a combination's reason)."""
        raise NotImplementedError

    def size(self, text: str) -> SmsSize | None:
        """Encoding, length and parts of a rendered text where the channel is billed per part, else None."""
        return sms_size(text) if self.counts_parts else None

    def parts(self, text: str) -> int:
        """Billable units of one message: its parts where counted, else one."""
        size = self.size(text)
        return size.parts if size else 1

    def preview(
        self, text: str, image_url: str | None, button: Button | None, template: WhatsAppTemplate | None = None
    ) -> str:
        """One line of details under a step's rendered text (and rendered template) in `preview`."""
        raise NotImplementedError


class ViberDefinition(ChannelDefinition):
    channel = Channel.VIBER
    label = "Viber"
    reports_reading = True
    text_max = VIBER_TEXT_MAX
    # (text, image, button) present: Viber's business messages allow these four
    combinations: ClassVar[frozenset[tuple[bool, bool, bool]]] = frozenset(
        {(True, False, False), (False, True, False), (True, False, True), (True, True, True)}
    )

    def content_problem(self, text: str, image_url: str | None, button: Button | None) -> str | None:
        if len(text) > self.text_max:
            return f"text: viber text is {len(text)} chars, the limit is {self.text_max}"
        combination = (bool(text), bool(image_url), bool(button))
        if combination not in self.combinations:
            present = "+".join(n for n, on in zip(("text", "image", "button"), combination, strict=True) if on)
            return f"viber allows text; image; text+button; text+image+button — not {present}"
        return None

    def preview(
        self, text: str, image_url: str | None, button: Button | None, template: WhatsAppTemplate | None = None
    ) -> str:
        details = [f"text {len(text)}/{self.text_max} chars"]
        if image_url:
            details.append(f"image {image_url}")
        if button:
            details.append(f"button {button.caption!r} → {button.url}")
        return " · ".join(details)


class SmsDefinition(ChannelDefinition):
    channel = Channel.SMS
    label = "SMS"
    reports_reading = False
    counts_parts = True

    def content_problem(self, text: str, image_url: str | None, button: Button | None) -> str | None:
        if image_url or button:
            return "sms steps cannot have an image or a button"
        if not text:
            return "text: an sms step needs a text"
        return None

    def preview(
        self, text: str, image_url: str | None, button: Button | None, template: WhatsAppTemplate | None = None
    ) -> str:
        size = sms_size(text)
        return f"{size.encoding} · {size.length} chars · {size.parts} part{'s' * (size.parts > 1)}"


class WhatsAppDefinition(ChannelDefinition):
    """Business-initiated WhatsApp: an approved template (domain/whatsapp.py), never free text, so a step has
    no `text`, image or button; the template's parameters are personalised like texts are."""

    channel = Channel.WHATSAPP
    label = "WhatsApp"
    reports_reading = True
    takes_template = True
    max_wait = WHATSAPP_MAX_WAIT

    def content_problem(self, text: str, image_url: str | None, button: Button | None) -> str | None:
        if text:
            return "text: a whatsapp step sends its approved template, not a text (give `template` only)"
        if image_url or button:
            return "whatsapp steps cannot have an image or a button (the approved template holds its layout)"
        return None

    def preview(
        self, text: str, image_url: str | None, button: Button | None, template: WhatsAppTemplate | None = None
    ) -> str:
        if template is None:
            return "template: none"
        parameters = ", ".join(repr(p) for p in template.parameters) or "no parameters"
        return f"template {template.name} ({template.language}) · {parameters}"


DEFINITIONS: Mapping[Channel, ChannelDefinition] = {
    d.channel: d for d in (ViberDefinition(), SmsDefinition(), WhatsAppDefinition())
}


def definition(channel: Channel | str) -> ChannelDefinition:
    """The definition of `channel` (a Channel or its value); UnsupportedChannel for anything else."""
    try:
        return DEFINITIONS[Channel(channel)]
    except (ValueError, KeyError):
        known = ", ".join(c.value for c in DEFINITIONS)
        raise UnsupportedChannel(f"{str(channel)!r} is not a supported channel ({known})") from None


def known(channel: str | None) -> ChannelDefinition | None:
    """The definition of a channel value read back from storage (None when absent or not a channel)."""
    if channel is None:
        return None
    try:
        return definition(channel)
    except UnsupportedChannel:
        return None
