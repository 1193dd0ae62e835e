"""Unit tests of the pure domain core: statuses, durations, templates, references, the spec and phones.

Nothing here needs a server; spec tests write real TOML files into `tmp_path`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from domain.durations import format_duration, parse_duration
from domain.phones import PhoneResult, RejectReason, normalize_phone
from domain.refs import ClientRef, mailing_workflow_id, recipient_workflow_id
from domain.spec import MailingSpec, SpecError, Step, load_spec
from domain.status import MessageStatus, advance
from domain.template import MissingVariableError, render, variables_used

S = MessageStatus

# --- domain.status -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (S.PENDING, S.SENT, S.SENT),
        (S.PENDING, S.DELIVERED, S.DELIVERED),  # a lost "sent" report does not block delivery
        (S.SENT, S.DELIVERED, S.DELIVERED),
        (S.DELIVERED, S.READ, S.READ),
        (S.SENT, S.UNDELIVERED, S.UNDELIVERED),
        (S.PENDING, S.NOT_SENT, S.NOT_SENT),
    ],
)
def test_advance_moves_forward(current: MessageStatus, reported: MessageStatus, expected: MessageStatus) -> None:
    assert advance(current, reported) is expected


@pytest.mark.parametrize(
    ("current", "reported"),
    [
        (S.SENT, S.PENDING),
        (S.SENT, S.SENT),
        (S.DELIVERED, S.SENT),
        (S.DELIVERED, S.PENDING),
        (S.DELIVERED, S.DELIVERED),
    ],
)
def test_advance_never_moves_backward(current: MessageStatus, reported: MessageStatus) -> None:
    assert advance(current, reported) is current


def test_delivered_then_undelivered_stays_delivered() -> None:
    """A failure report arriving after the delivery report is stale."""
    assert advance(S.DELIVERED, S.UNDELIVERED) is S.DELIVERED
    assert advance(S.DELIVERED, S.NOT_SENT) is S.DELIVERED


@pytest.mark.parametrize("final", [S.READ, S.UNDELIVERED])
@pytest.mark.parametrize("reported", list(MessageStatus))
def test_final_statuses_are_sticky(final: MessageStatus, reported: MessageStatus) -> None:
    assert final.is_final
    assert advance(final, reported) is final


@pytest.mark.parametrize("reported", [S.SENT, S.DELIVERED, S.READ, S.UNDELIVERED])
def test_a_provider_report_overturns_not_sent(reported: MessageStatus) -> None:
    """The send was given up on, yet the provider had it: what it reports is what happened."""
    assert advance(S.NOT_SENT, reported) is reported
    assert advance(S.NOT_SENT, S.PENDING) is S.NOT_SENT


def test_only_read_undelivered_and_not_sent_are_final() -> None:
    assert {s for s in MessageStatus if s.is_final} == {S.READ, S.UNDELIVERED, S.NOT_SENT}


def test_duplicate_reports_are_harmless() -> None:
    status = S.PENDING
    for reported in (S.SENT, S.DELIVERED, S.SENT, S.DELIVERED, S.UNDELIVERED, S.READ, S.DELIVERED, S.READ):
        status = advance(status, reported)
    assert status is S.READ


@pytest.mark.parametrize(
    ("status", "expected", "reached"),
    [
        (S.DELIVERED, S.DELIVERED, True),
        (S.READ, S.DELIVERED, True),  # read implies delivered
        (S.READ, S.READ, True),
        (S.DELIVERED, S.READ, False),
        (S.SENT, S.DELIVERED, False),
        (S.PENDING, S.DELIVERED, False),
        (S.UNDELIVERED, S.DELIVERED, False),
        (S.NOT_SENT, S.DELIVERED, False),
        (S.UNDELIVERED, S.READ, False),
    ],
)
def test_reached(status: MessageStatus, expected: MessageStatus, reached: bool) -> None:
    assert status.reached(expected) is reached


# --- domain.durations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("2d", timedelta(days=2)),
        ("1m30s", timedelta(seconds=90)),
        (" 1H 30M ", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "5", "abc", "5x", "1.5h", "-5s", "5m later", "m", "h1"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=2, seconds=5), "2h5s"),
        (timedelta(days=1), "24h"),
        (timedelta(seconds=59, milliseconds=900), "59s"),
    ],
)
def test_format_duration(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@pytest.mark.parametrize("text", ["1s", "90s", "5m", "1h30m", "72h", "3h2m1s"])
def test_format_then_parse_round_trips(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


# --- domain.template -----------------------------------------------------------------------------------------


def test_render_by_header_name() -> None:
    assert render("Hello {name}, code {code}", {"name": "Anna", "code": "BF1"}) == "Hello Anna, code BF1"


def test_render_by_position() -> None:
    assert render("{2}: call {1}", {"1": "+79990002233", "2": "Anna"}) == "Anna: call +79990002233"


def test_render_ignores_spaces_inside_the_braces() -> None:
    assert render("Hi { name }", {"name": "Anna"}) == "Hi Anna"


def test_render_default_used_when_value_missing_or_empty() -> None:
    assert render("Hi {name|friend}", {}) == "Hi friend"
    assert render("Hi {name|friend}", {"name": ""}) == "Hi friend"
    assert render("Hi {name|}!", {}) == "Hi !"


def test_render_value_wins_over_default() -> None:
    assert render("Hi {name|friend}", {"name": "Anna"}) == "Hi Anna"


def test_render_without_placeholders_is_unchanged() -> None:
    assert render("Sale today", {"name": "Anna"}) == "Sale today"


@pytest.mark.parametrize("variables", [{}, {"name": ""}, {"other": "x"}])
def test_render_missing_value_without_default_raises(variables: dict[str, str]) -> None:
    with pytest.raises(MissingVariableError) as caught:
        render("Hi {name}, code {code|none}", variables)
    assert caught.value.variable == "name"
    assert str(caught.value) == "no value for variable {name}"


def test_variables_used() -> None:
    text = "Hi {name|friend}, your code {code} for {1}; {name|friend} again {empty|}"
    assert variables_used(text) == {"name": "friend", "code": None, "1": None, "empty": ""}
    assert variables_used("no placeholders") == {}


# --- domain.refs ---------------------------------------------------------------------------------------------


def test_client_ref_round_trip() -> None:
    ref = ClientRef("black-friday-2", "+79990002233", 2)
    assert str(ref) == "black-friday-2/+79990002233/2"
    assert ClientRef.parse(str(ref)) == ref


def test_client_ref_workflow_id() -> None:
    ref = ClientRef("spring", "+79990002233", 1)
    assert ref.workflow_id == "mailing-spring/+79990002233"
    assert ref.workflow_id == recipient_workflow_id("spring", "+79990002233")
    assert mailing_workflow_id("spring") == "mailing-spring"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "spring/+79990002233",
        "Spring/+79990002233/1",  # upper case mailing id
        "-spring/+79990002233/1",
        "spring/79990002233/1",  # no plus
        "spring/+7999/1",  # too few digits
        "spring/+79990002233/123",  # step has at most two digits
        "spring/+79990002233/x",
        "spring/+79990002233/1/extra",
        "x" + "/+79990002233/1" * 3,
        "a" * 49 + "/+79990002233/1",  # mailing id over 48 chars
    ],
)
def test_client_ref_parse_rejects_foreign_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a kaskad client reference"):
        ClientRef.parse(text)


# --- domain.spec ---------------------------------------------------------------------------------------------

VIBER_STEP = """
[[steps]]
channel = "viber"
sender = "Shop"
text = "Hello {name}"
wait = "5m"
"""

SMS_STEP = """
[[steps]]
channel = "sms"
sender = "Shop"
text = "Hello {name}, code {code}"
wait = "1h30m"
"""


def write_spec(folder: Path, body: str, *, source: str = 'recipients = "recipients.csv"') -> Path:
    """A spec file in `folder` next to an existing `recipients.csv`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipients.csv").write_text("phone,name,code\n+79990002233,Anna,A1\n", encoding="utf-8")
    path = folder / "mailing.toml"
    path.write_text(f'name = "Test mailing"\n{source}\n{body}', encoding="utf-8")
    return path


def spec_error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    return message


def test_load_valid_spec(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    path = write_spec(
        folder,
        """
provider = "smsc"
late_reports = "15m"

[[steps]]
channel = "viber"
sender = "Shop"
text = "Hello {name}"
image_url = "https://example.com/banner.PNG"
button = { caption = "Open the shop", url = "https://example.com/shop" }
wait = "90s"
expect = "read"
provider = "viber-direct"
"""
        + SMS_STEP,
    )
    spec = load_spec(path)
    assert spec.name == "Test mailing"
    assert spec.recipients == (folder / "recipients.csv").resolve()
    assert spec.numbers is None
    assert spec.region == "RU"
    assert spec.late_reports == timedelta(minutes=15)
    viber, sms = spec.steps
    assert viber.wait == timedelta(seconds=90)
    assert viber.expect is MessageStatus.READ
    assert viber.button is not None and viber.button.caption == "Open the shop"
    assert sms.wait == timedelta(hours=1, minutes=30)
    assert sms.expect is MessageStatus.DELIVERED
    plan = spec.cascade()
    assert [plan.provider_for(step) for step in plan.steps] == ["viber-direct", "smsc"]


def test_relative_recipients_path_is_resolved_against_the_spec_folder(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "people.csv").write_text("+79990002233\n", encoding="utf-8")
    path = write_spec(tmp_path / "specs" / "spring", VIBER_STEP, source='recipients = "../../lists/people.csv"')
    assert load_spec(path).recipients == (lists / "people.csv").resolve()


def test_spec_with_manual_numbers(tmp_path: Path) -> None:
    path = write_spec(tmp_path, SMS_STEP.replace("{name}, code {code}", "{1}"), source='numbers = ["+79990002233"]')
    spec = load_spec(path)
    assert spec.recipients is None
    assert spec.numbers == ["+79990002233"]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param(
            'channel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nexpect = "read"',
            "steps.0: expect: 'read' is invalid for sms: it never reports reading",
            id="read-on-sms",
        ),
        pytest.param(
            f'channel = "viber"\nsender = "Shop"\ntext = "{"x" * 1001}"\nwait = "5m"',
            "steps.0: text: viber text is 1001 chars, the limit is 1000",
            id="viber-text-too-long",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n'
            f'button = {{ caption = "{"c" * 31}", url = "https://example.com" }}',
            "steps.0.button.caption: String should have at most 30 characters",
            id="button-caption-too-long",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n'
            'button = { caption = "Go", url = "ftp://example.com/file" }',
            "steps.0.button.url: URL scheme must be one of http, https, viber, mailto, tel, not 'ftp'",
            id="button-url-scheme",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n'
            'button = { caption = "Go", url = "javascript:alert(1)" }',
            "steps.0.button.url: URL scheme must be one of http, https, viber, mailto, tel, not 'javascript'",
            id="button-url-javascript",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nimage_url = "https://example.com/a.gif"',
            "steps.0.image_url: image must be a JPG or PNG file",
            id="image-not-jpg-or-png",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nimage_url = "ftp://example.com/a.png"',
            "steps.0.image_url: must be an http(s) URL",
            id="image-not-http",
        ),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\nwait = "5m"\nimage_url = "https://example.com/a.jpg"\n'
            'button = { caption = "Go", url = "https://example.com" }',
            "steps.0: viber allows text; image; text+button; text+image+button — not image+button",
            id="image-and-button-without-text",
        ),
        pytest.param(
            'channel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\nimage_url = "https://example.com/a.jpg"',
            "steps.0: sms steps cannot have an image or a button",
            id="image-on-sms",
        ),
        pytest.param(
            'channel = "sms"\nsender = "Shop"\nwait = "5m"',
            "steps.0: text: an sms step needs a text",
            id="sms-without-text",
        ),
        pytest.param(
            'channel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "0s"',
            "steps.0.wait: must be between 1s and 72h",
            id="wait-0s",
        ),
        pytest.param(
            'channel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "73h"',
            "steps.0.wait: must be between 1s and 72h",
            id="wait-73h",
        ),
        pytest.param(
            'channel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "soon"',
            "steps.0.wait: 'soon' is not a duration",
            id="wait-not-a-duration",
        ),
        pytest.param(
            'channel = "fax"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"',
            "steps.0.channel: Input should be 'viber', 'sms' or 'whatsapp'",
            id="unknown-channel",
        ),
    ],
)
def test_step_errors_name_the_field_and_the_reason(tmp_path: Path, step: str, expected: str) -> None:
    path = write_spec(tmp_path, f"{VIBER_STEP}\n[[steps]]\n{step}\n")
    # the faulty step is the second one: its error names `steps.1`
    assert expected.replace("steps.0", "steps.1") in spec_error(path)


@pytest.mark.parametrize("late", ['"999999999d"', '"73h"', "-5"])
def test_late_reports_is_bounded_like_a_wait(tmp_path: Path, late: str) -> None:
    path = write_spec(tmp_path, SMS_STEP, source=f'numbers = ["+79990002233"]\nlate_reports = {late}')
    assert "late_reports: must be between 0s and 72h" in spec_error(path)


def test_late_reports_may_be_zero_or_72h(tmp_path: Path) -> None:
    for late, expected in (('"0s"', timedelta(0)), ('"72h"', timedelta(hours=72))):
        path = write_spec(tmp_path, SMS_STEP, source=f'numbers = ["+79990002233"]\nlate_reports = {late}')
        assert load_spec(path).late_reports == expected


def test_step_error_in_first_step(tmp_path: Path) -> None:
    path = write_spec(tmp_path, SMS_STEP.replace('wait = "1h30m"', 'wait = "0s"') + VIBER_STEP)
    message = spec_error(path)
    assert "steps.0.wait: must be between 1s and 72h" in message
    assert "steps.1" not in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    faulty = 'wait = "73h"\nimage_url = "https://example.com/a.bmp"\ncolour = "red"'
    message = spec_error(
        write_spec(tmp_path, VIBER_STEP.replace('wait = "5m"', faulty), source='numbers = []\nregion = "ru"')
    )
    assert "steps.0.wait: must be between 1s and 72h" in message
    assert "steps.0.image_url: image must be a JPG or PNG file" in message
    assert "steps.0.colour: Extra inputs are not permitted" in message
    assert "region: String should match pattern" in message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('channel = "viber"\nsender = "Shop"\ntext = "' + "x" * 1000 + '"\nwait = "1s"', id="limits"),
        pytest.param(
            'channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "72h"\n'
            f'button = {{ caption = "{"c" * 30}", url = "viber://chat?number=123" }}',
            id="caption-30",
        ),
        pytest.param('channel = "viber"\nsender = "Shop"\nimage_url = "https://e.com/a.jpeg"\nwait = "5m"', id="image"),
        pytest.param('channel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "PT5S"', id="iso-wait"),
    ],
)
def test_boundary_values_are_accepted(tmp_path: Path, body: str) -> None:
    spec = load_spec(write_spec(tmp_path, f"[[steps]]\n{body}\n"))
    assert len(spec.steps) == 1


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ('recipients = "recipients.csv"\nnumbers = ["+79990002233"]', "both"),
        ("", "neither"),
    ],
)
def test_exactly_one_recipient_source(tmp_path: Path, source: str, label: str) -> None:
    message = spec_error(write_spec(tmp_path, VIBER_STEP, source=source))
    assert "spec: give exactly one of `recipients` (a file) or `numbers` (a list)" in message, label


def test_missing_recipients_file(tmp_path: Path) -> None:
    message = spec_error(write_spec(tmp_path, VIBER_STEP, source='recipients = "nobody.csv"'))
    assert f"recipients: file not found: {(tmp_path / 'nobody.csv').resolve()}" in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "unterminated\n[[steps]]\n', encoding="utf-8")
    assert "not valid TOML" in spec_error(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    assert "cannot read" in spec_error(tmp_path / "absent.toml")


def test_no_steps(tmp_path: Path) -> None:
    assert "steps: Field required" in spec_error(write_spec(tmp_path, ""))


def test_iso_wait_validates() -> None:
    step = Step.model_validate({"channel": "sms", "sender": "Shop", "text": "Hi", "wait": "PT5S"})
    assert step.wait == timedelta(seconds=5)


@pytest.mark.parametrize("wait", ["PT0S", "PT73H", "P4D"])
def test_iso_wait_range_is_checked_too(wait: str) -> None:
    with pytest.raises(ValueError, match="must be between 1s and 72h"):
        Step.model_validate({"channel": "sms", "sender": "Shop", "text": "Hi", "wait": wait})


def test_spec_round_trips_through_a_json_payload(tmp_path: Path) -> None:
    """Payloads carry durations as ISO 8601 ("PT5M"); they must validate back to the same spec."""
    spec = load_spec(
        write_spec(tmp_path, VIBER_STEP + SMS_STEP, source='numbers = ["+79990002233"]\nlate_reports="5s"')
    )
    payload = spec.model_dump(mode="json")
    assert payload["steps"][0]["wait"] == "PT5M"
    assert payload["late_reports"] == "PT5S"
    assert MailingSpec.model_validate(payload) == spec
    assert MailingSpec.model_validate_json(spec.model_dump_json()) == spec


# --- domain.phones -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["79990002233", "+7 999 000-22-33", "8 (999) 000-22-33", "9990002233", " +7(999)000 22 33 ", "89990002233"],
)
def test_normalize_phone_accepts_russian_mobile_notations(raw: str) -> None:
    assert normalize_phone(raw) == PhoneResult("+79990002233")


def test_normalize_phone_foreign_number_with_country_code() -> None:
    assert normalize_phone("+44 7911 123456") == PhoneResult("+447911123456")
    assert normalize_phone("07911 123456", "GB") == PhoneResult("+447911123456")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", RejectReason.EMPTY),
        ("   ", RejectReason.EMPTY),
        ("abc", RejectReason.NOT_A_NUMBER),
        ("12345", RejectReason.TOO_SHORT),
        ("+7 999", RejectReason.TOO_SHORT),
        ("+7 999 000-22-33 4455 6", RejectReason.TOO_LONG),
        ("+7 999 000 22 33 44 55 66 77 88 99", RejectReason.TOO_LONG),
        ("+7 000 000-00-00", RejectReason.INVALID),
        ("+7 111 111-11-11", RejectReason.INVALID),
        ("+7 495 123-45-67", RejectReason.NOT_MOBILE),
    ],
)
def test_normalize_phone_rejects_with_reason(raw: str, reason: RejectReason) -> None:
    result = normalize_phone(raw)
    assert result == PhoneResult(None, reason)


def test_landline_accepted_when_allowed() -> None:
    assert normalize_phone("+7 495 123-45-67", allow_landline=True) == PhoneResult("+74951234567")
    assert normalize_phone("8 (495) 123-45-67", allow_landline=True) == PhoneResult("+74951234567")


def test_allow_landline_does_not_accept_invalid_numbers() -> None:
    assert normalize_phone("+7 000 000-00-00", allow_landline=True) == PhoneResult(None, RejectReason.INVALID)
