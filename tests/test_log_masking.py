"""Issue 10: no phone number reaches kaskad's logs unmasked (the filter, and a real mailing end to end)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from providers.sandbox import SIGNATURE_HEADER, sign
from runtime.devstack import Stack
from runtime.logs import MaskPhones, configure_logging, mask_phones
from starter import checked_spec, start_mailing

NOW = "2024-05-01T12:00:00Z"
ROOT = Path(__file__).resolve().parent.parent


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("kaskad.test", logging.WARNING, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def formatted(made: logging.LogRecord) -> str:
    MaskPhones().filter(made)
    return logging.Formatter("%(asctime)s %(message)s").format(made)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+79991234588", "+7999*****88"),
        ("workflow mailing-spring/+79991234588 failed", "workflow mailing-spring/+7999*****88 failed"),
        ("ref spring-1/+14155552671/0", "ref spring-1/+1415*****71/0"),
        ("short +4930123", "short +49***23"),  # at least half of the digits stay hidden
        ("url ?to=%2B79991234588", "url ?to=%2B7999*****88"),
        ("input_value='+447700900123'", "input_value='+4477******23'"),
    ],
)
def test_numbers_are_masked_keeping_country_code_and_last_two(text: str, expected: str) -> None:
    assert mask_phones(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "listening on 127.0.0.1:8080",
        "2024-05-01 12:00:00,123 +0300 took 1234567 ms",
        "sent 12345678 messages, rate +12.5%",
        "mailing spring-2024-0001 step 2",
    ],
)
def test_non_numbers_are_left_alone(text: str) -> None:
    assert mask_phones(text) == text


def test_numbers_in_args_extra_context_and_tracebacks_are_masked() -> None:
    made = record(
        "send to %s failed (%s)",
        "+79991234588",
        {"to": "+79991234511"},
        temporal_workflow={"workflow_id": "mailing-m/+79991234522", "attempt": 1},
    )
    try:
        raise ValueError("bad number +79991234533")
    except ValueError:
        made.exc_info = sys.exc_info()
    text = formatted(made)
    assert "+7999*****88" in text and "+7999*****11" in text and "+7999*****33" in text
    assert vars(made)["temporal_workflow"] == {"workflow_id": "mailing-m/+7999*****22", "attempt": 1}
    assert "1234588" not in text + str(vars(made))


def test_a_mapping_without_the_key_does_not_raise_into_the_caller() -> None:
    made = logging.LogRecord("kaskad.test", logging.WARNING, __file__, 1, "%(a)s to +79991234588", None, None)
    made.args = {"b": "+79991234511"}  # what log.info("%(a)s", {"b": …}) builds
    text = formatted(made)
    assert "+7999*****88" in text and "1234588" not in text and "1234511" not in text


def test_a_namedtuple_in_args_or_extra_does_not_raise_and_is_masked() -> None:
    Pair = collections.namedtuple("Pair", "to ref")
    made = record("bad %s %s", "+79991234588", {"x": 1}, context=Pair("+79991234511", "r"))
    made.args = Pair("+79991234522", "r")  # args that do not fit the message, as a namedtuple
    text = formatted(made)
    assert "1234522" not in text + str(vars(made)) and "1234511" not in str(vars(made))


def test_logging_through_a_masked_handler_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("kaskad.test.never")
    caplog.handler.addFilter(MaskPhones())
    Pair = collections.namedtuple("Pair", "to ref")
    log.warning("%(a)s", {"b": 1})
    log.warning("%s %s", "+79991234588", extra={"pair": Pair("+79991234511", "r")})
    assert "1234588" not in caplog.text and len(caplog.records) == 2


def test_configure_logging_puts_the_filter_on_every_root_handler() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        configure_logging()
        assert all(any(isinstance(f, MaskPhones) for f in h.filters) for h in root.handlers)
    finally:
        root.removeHandler(handler)


@pytest.mark.e2e
async def test_a_mailing_logs_no_unmasked_number(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker, gateway, sandbox and the Temporal SDK in one process; their lines about the recipients are
    captured, and none of them carries a number in clear."""
    caplog.set_level(logging.INFO)
    configure_logging()  # what every entry point does; under pytest the root's handlers are caplog's
    numbers = [f"+7999555{n:04d}" for n in range(3)]
    mailing_id = f"logs-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'name = "Logs"\nnumbers = {json.dumps(numbers)}\nlate_reports = "2s"\n[schedule]\nhours = "00:00-24:00"\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5s"\nexpect = "delivered"\n',
        encoding="utf-8",
    )
    assert stack.ledger is not None
    handle = await start_mailing(
        stack.client, stack.settings, stack.ledger, checked_spec(spec, stack.settings), mailing_id
    )
    secret = stack.settings.webhook_secret
    assert secret is not None
    webhook = f"{stack.settings.webhook_base_url}/webhooks/sandbox"

    async def post(body: dict[str, str]) -> httpx.Response:
        raw = json.dumps(body).encode()
        return await http.post(webhook, content=raw, headers={SIGNATURE_HEADER: sign(key, raw)})

    key = secret.get_secret_value()
    async with httpx.AsyncClient() as http:
        for number in numbers:  # a malformed report (the gateway logs it), then one for a step never sent
            assert (await post({"client_ref": f"{mailing_id}/{number}/0", "status": number})).status_code == 400
            unsent = {"client_ref": f"{mailing_id}/{number}/7", "message_id": "x", "status": "sent", "timestamp": NOW}
            for _ in range(300):  # until the recipient workflow exists and takes it (the workflow logs it)
                if (await post(unsent)).json()["recorded"] == 1:
                    break
                await asyncio.sleep(0.1)
    await handle.result()

    unknown_step = [r for r in caplog.records if r.name.startswith("temporalio") and "unknown step" in r.msg]
    # The SDK's own lines, which carry the workflow id in their context (at least one: a workflow task that is
    # replayed — a cache eviction under load — does not log again).
    assert unknown_step
    captured = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    for number in numbers:
        assert number not in captured
        assert mask_phones(number) in caplog.text  # lines about this recipient were logged, masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to 79991234567 failed", "to 7999*****67 failed"),
        ("to 89991234567", "to 8999*****67"),
        ("to +7 999 123-45-67 now", "to +7 999 ***-**-67 now"),
        ("to +7 (999) 123 45 67.", "to +7 (999) *** ** 67."),
        ("to 8-999-123-45-67", "to 8-999-***-**-67"),
        ("to +1.415.555.2671", "to +1.415.***.**71"),
        ("number=%2B79991234567&x", "number=%2B7999*****67&x"),
    ],
)
def test_numbers_without_a_plus_or_with_separators_are_masked(text: str, expected: str) -> None:
    assert mask_phones(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "run 550e8400-e29b-41d4-a716-446655440000 started",
        "run 12345678-1234-1234-1234-123456789012 started",
        "at 2024-05-01 12:00:00,123 and 2024-05-01T12:00:00.123456+03:00",
        "2024-05-01 12:00:00 +0300",
        "took 1234567.890 s, 123456789 rows, port 7233, pid 12345",
        "mailing spring-2024-05-01-1a2b3c, event 12345",
        "version 1.35.0, address 127.0.0.1:7233",
    ],
)
def test_uuids_timestamps_and_counts_stay_readable(text: str) -> None:
    assert mask_phones(text) == text


def test_forwarded_temporal_core_lines_are_masked_in_their_entry_too() -> None:
    """The SDK forwards the core's log lines with the core's entry (message and fields) on the record."""

    class Entry:  # what temporalio.bridge.runtime.BufferedLogEntry offers
        target, time, level = "worker", 0.0, logging.WARNING
        message = "failed for mailing-m/+79991234588"
        fields: ClassVar[dict[str, str]] = {"workflow_id": "mailing-m/+79991234511"}

    made = record("[sdk_core::worker] failed for mailing-m/+79991234588 {'workflow_id': 'mailing-m/+79991234511'}")
    made.temporal_log = Entry()
    text = formatted(made)
    entry = vars(made)["temporal_log"]
    seen = text + str(entry.message) + str(entry.fields)
    assert "1234588" not in seen and "1234511" not in seen and "+7999*****11" in str(entry.fields)


SUBCOMMAND_LOGGING = """
import logging, sys
import starter
from runtime.logs import MaskPhones
code = starter.main(sys.argv[1:])
handlers = logging.getLogger().handlers
print("masked" if handlers and all(any(isinstance(f, MaskPhones) for f in h.filters) for h in handlers) else "unmasked")
"""


@pytest.mark.parametrize(
    "argv",
    [["validate", "NUMBERS"], ["preview", "SPEC"], ["status", "nobody"], ["pause", "nobody"]],
    ids=["validate", "preview", "status", "pause"],
)
def test_every_subcommand_masks_its_logs(tmp_path: Path, argv: list[str]) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+79991234567\n", encoding="utf-8")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "L"\nnumbers = ["+79991234567"]\n[[steps]]\nchannel = "sms"\nsender = "S"\ntext = "Hi"\nwait = "5s"\n',
        encoding="utf-8",
    )
    args = [{"NUMBERS": str(numbers), "SPEC": str(spec)}.get(arg, arg) for arg in argv]
    env = {**os.environ, "KASKAD_TEMPORAL_ADDRESS": "127.0.0.1:9", "KASKAD_CONNECT_TIMEOUT": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SUBCOMMAND_LOGGING, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.stdout.strip().endswith("masked") and "unmasked" not in result.stdout, result.stdout + result.stderr
