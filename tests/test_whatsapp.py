"""WhatsApp as a cascade channel: its definition, the spec's template, rendering, the sandbox's rules."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from domain.channels import definition
from domain.models import SendRequest
from domain.refs import ClientRef
from domain.spec import SpecError, load_spec
from domain.status import Channel, MessageStatus
from domain.template import MissingVariableError
from domain.whatsapp import WhatsAppTemplate
from recipients.importer import open_source
from recipients.reader import RecipientsError
from sandbox.outcomes import ERROR_CODES, planned_reports

WHATSAPP_STEP = """
[[steps]]
channel = "whatsapp"
sender = "Shop"
template = { name = "order_update", language = "ru", parameters = ["{name}", "{code|—}"] }
wait = "7d"
expect = "read"
"""


def write_spec(folder: Path, steps: str, csv: str = "phone,name,code\n+79990002233,Anna,A1\n") -> Path:
    (folder / "recipients.csv").write_text(csv, encoding="utf-8")
    path = folder / "mailing.toml"
    path.write_text(f'name = "WhatsApp"\nrecipients = "recipients.csv"\n{steps}', encoding="utf-8")
    return path


def spec_error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


def test_the_definition() -> None:
    whatsapp = definition("whatsapp")
    assert (whatsapp.channel, whatsapp.label, whatsapp.reports_reading) == (Channel.WHATSAPP, "WhatsApp", True)
    assert whatsapp.expects == (MessageStatus.DELIVERED, MessageStatus.READ)
    assert whatsapp.wait_problem(timedelta(minutes=10080)) is None
    assert whatsapp.wait_problem(timedelta(minutes=10081)) == "must be between 1s and 168h"
    assert (whatsapp.size("x" * 500), whatsapp.parts("x" * 500)) == (None, 1)
    assert whatsapp.template_problem(None) == (
        "template: a whatsapp step needs an approved template (name, language, parameters)"
    )
    template = WhatsAppTemplate(name="order_update", language="ru", parameters=["Anna", "A1"])
    assert definition("sms").template_problem(template) == "template: sms steps send their text, they take no template"
    assert whatsapp.preview("", None, None, template) == "template order_update (ru) · 'Anna', 'A1'"


def test_a_whatsapp_step_loads(tmp_path: Path) -> None:
    step = load_spec(write_spec(tmp_path, WHATSAPP_STEP)).steps[0]
    assert step.template == WhatsAppTemplate(name="order_update", language="ru", parameters=["{name}", "{code|—}"])
    assert (step.text, step.wait, step.expect) == ("", timedelta(days=7), MessageStatus.READ)
    assert step.personalised == ("", "{name}", "{code|—}")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(('name = "order_update"', 'name = "Order Update"'), "steps.1.template.name: String should match"),
        pytest.param(('language = "ru"', 'language = "russian"'), "steps.1.template.language: String should match"),
        pytest.param(('language = "ru", ', ""), "steps.1.template.language: Field required"),
        pytest.param(("parameters", "params"), "steps.1.template.params: Extra inputs are not permitted"),
        pytest.param(('wait = "7d"', 'wait = "10081m"'), "steps.1.wait: must be between 1s and 168h"),
        pytest.param(
            ("template = {", 'text = "Hi"\ntemplate = {'),
            "steps.1: text: a whatsapp step sends its approved template, not a text (give `template` only)",
        ),
        pytest.param(
            ("template = {", 'button = { caption = "Go", url = "https://e.com" }\ntemplate = {'),
            "steps.1: whatsapp steps cannot have an image or a button",
        ),
        pytest.param(
            ('template = { name = "order_update", language = "ru", parameters = ["{name}", "{code|—}"] }', ""),
            "steps.1: template: a whatsapp step needs an approved template (name, language, parameters)",
        ),
    ],
)
def test_whatsapp_errors_name_the_field(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    sms = '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n'
    path = write_spec(tmp_path, sms + WHATSAPP_STEP.replace(*change))
    assert expected in spec_error(path)


def test_a_template_on_another_channel_is_refused(tmp_path: Path) -> None:
    steps = '[[steps]]\nchannel = "viber"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n'
    steps += 'template = { name = "order_update", language = "ru" }\n'
    assert "steps.0: template: viber steps send their text, they take no template" in spec_error(
        write_spec(tmp_path, steps)
    )


def test_parameters_are_rendered_per_recipient(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, WHATSAPP_STEP))
    ref = ClientRef("m1", "+79990002233", 0)
    request = SendRequest.for_step(ref, spec.cascade(), spec.steps[0], "", {"name": "Anna", "code": ""})
    assert request.template == WhatsAppTemplate(name="order_update", language="ru", parameters=["Anna", "—"])
    assert request.channel is Channel.WHATSAPP and request.ttl == timedelta(days=7)
    with pytest.raises(MissingVariableError, match=r"no value for variable \{name\}"):
        SendRequest.for_step(ref, spec.cascade(), spec.steps[0], "", {"name": ""})


def test_a_parameter_naming_a_missing_column_is_refused_before_the_import(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, WHATSAPP_STEP, csv="phone,code\n+79990002233,A1\n"))
    with pytest.raises(RecipientsError, match=r"steps\.0\.template\.parameters uses \{name\}"):
        open_source(spec)


@pytest.mark.parametrize(
    ("digit", "reports"),
    [
        *[(d, (MessageStatus.DELIVERED, MessageStatus.READ)) for d in "01234"],
        *[(d, (MessageStatus.DELIVERED,)) for d in "56"],
        ("7", (MessageStatus.UNDELIVERED,)),
        *[(d, ()) for d in "89"],
    ],
)
def test_the_sandbox_rules(digit: str, reports: tuple[MessageStatus, ...]) -> None:
    assert planned_reports(Channel.WHATSAPP, f"+7999000000{digit}") == reports
    assert ERROR_CODES[Channel.WHATSAPP] == "not-whatsapp-user"
