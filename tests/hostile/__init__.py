"""The hostile-input corpus: specs and webhook bodies that once ended in a traceback, a 5xx or 8 GB of RSS.

Kept as code, not files: the big cases (100,000-deep JSON, a 50,000-part dotted key) are generated at test
time, so nothing large is committed. `SPEC_CASES` feed `starter.py`, `webhook_bodies()` feed the gateway.
Every case must end cleanly: `error: …` with exit 1 for the CLI, a 4xx for the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

DEEP = 100_000  # deeper than any recursion limit

VALID_SPEC = """name = "hostile"
numbers = ["+79990000001"]
[[steps]]
channel = "sms"
sender = "Shop"
text = "hi"
wait = "5m"
"""


def _spec(text: str) -> bytes:
    return text.encode()


def _valid_with(old: str, new: str) -> bytes:
    assert old in VALID_SPEC
    return VALID_SPEC.replace(old, new, 1).encode()


# name → the spec file's bytes. Each must be refused with `error: <file or field>: <reason>` and exit 1.
SPEC_CASES: dict[str, Callable[[], bytes]] = {
    "utf16": lambda: VALID_SPEC.encode("utf-16"),
    "binary": lambda: bytes(range(256)) * 8,
    "latin1": lambda: _valid_with('"hi"', '"caf\xe9"').decode().encode("latin-1"),
    "deep_array": lambda: _spec("name = 'x'\nx = " + "[" * DEEP + "]" * DEEP + "\n"),
    "deep_inline_table": lambda: _spec("name = 'x'\nx = " + "{a = " * 40_000 + "1" + "}" * 40_000 + "\n"),  # < 256 KB
    "dotted_key_50k": lambda: _spec("a." * 49_999 + "a = 1\n"),
    "dotted_table_50k": lambda: _spec("[" + "a." * 49_999 + "a]\n"),
    "oversized": lambda: _spec(VALID_SPEC + ("# padding\n" * 40_000)),
    "nul_in_recipients": lambda: _spec(
        VALID_SPEC.replace('numbers = ["+79990000001"]', 'recipients = "a\\u0000b.csv"')
    ),
    "wait_overflow": lambda: _valid_with('wait = "5m"', 'wait = "99999999999999999999999h"'),
    "wait_5000_digits": lambda: _valid_with('wait = "5m"', f'wait = "{"9" * 5000}s"'),
    "late_reports_overflow": lambda: _valid_with(
        'name = "hostile"', 'name = "hostile"\nlate_reports = "99999999999999999999d"'
    ),
    "int_5000_digits": lambda: _valid_with('name = "hostile"', f'name = "hostile"\nspeed = {"1" * 5000}'),
    "late_reports_999999999d": lambda: _valid_with('name = "hostile"', 'name = "hostile"\nlate_reports = "999999999d"'),
    "speed_seconds_7": lambda: _valid_with('name = "hostile"', 'name = "hostile"\nspeed = { count = 5, seconds = 7 }'),
    "start_and_end_at_extremes": lambda: _valid_with(
        'name = "hostile"', 'name = "hostile"\nstart_at = 9999-12-31T23:59:59-23:59\nend_at = 9999-12-31T23:59:59+23:59'
    ),
}


def write_spec(case: str, folder: Path) -> Path:
    path = folder / f"{case}.toml"
    path.write_bytes(SPEC_CASES[case]())
    return path


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def deep_json(opening: str = "[", closing: str = "]") -> bytes:
    return (opening * DEEP + closing * DEEP).encode()


def deep_object() -> bytes:
    return ('{"a":' * DEEP + "1" + "}" * DEEP).encode()


# Bodies every JSON adapter must refuse with 400 (once its authentication passes).
COMMON_BODIES: dict[str, Callable[[], bytes]] = {
    "deep_array": deep_json,
    "deep_object": deep_object,
    "not_utf8": lambda: b"\xff\xfe{\x00}\x00",
    "empty": lambda: b"",
    "nan": lambda: b"NaN",
    "huge_number": lambda: b"1" * 5000,
    "lone_surrogate": lambda: b'"\\ud800"',
}

REF = "hostile/+79990000001/0"

RAW = "@raw@"


def _with_raw(value: object, raw: str) -> bytes:
    """`value` as JSON with the string "@raw@" replaced by `raw` verbatim: NaN, 1e999, 10**30, deep nesting."""
    return json.dumps(value).replace(json.dumps(RAW), raw).encode()


_NUMBERS = {
    "inf": "1e999",
    "minus_inf": "-1e999",
    "nan": "NaN",
    "1e20": "1e20",
    "minus_1e20": "-1e20",
    "10_30": "1" + "0" * 30,
}
_SANDBOX = {"message_id": "m", "client_ref": REF, "status": "delivered", "timestamp": "2026-01-01T00:00:00Z"}
_INFOBIP_STATUS = {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET"}
_REJECTED_STATUS = {"groupId": 5, "groupName": "REJECTED", "id": 6, "name": "REJECTED_NETWORK"}

# Per provider: bodies that parse as JSON but carry values the adapter must refuse (or not mis-take).
PROVIDER_BODIES: dict[str, dict[str, Callable[[], bytes]]] = {
    "sandbox": {
        f"timestamp_{name}": (lambda raw=raw: _with_raw(_SANDBOX | {"timestamp": RAW}, raw))
        for name, raw in _NUMBERS.items()
    }
    | {
        "surrogate_message_id": lambda: _json(_SANDBOX | {"message_id": "\ud800"}),
        "deep_in_field": lambda: _with_raw(_SANDBOX | {"timestamp": RAW}, deep_json().decode()),
    },
    "rapporto": {
        f"done_date_{name}": (lambda raw=raw: _with_raw({"id": REF, "status": 2, "doneDate": RAW}, raw))
        for name, raw in _NUMBERS.items()
    }
    | {
        "list_of_deep": lambda: b"[" + deep_json() + b"]",
        "surrogate_mtnum": lambda: _json({"id": REF, "status": 2, "mtNum": "\udfff"}),
        "done_date_year_1_offset": lambda: _json({"id": REF, "status": 2, "doneDate": "0001-01-01T00:00:00+05:00"}),
    },
    "infobip": {
        f"done_at_{name}": (
            lambda raw=raw: _with_raw({"results": [{"messageId": REF, "doneAt": RAW, "status": _INFOBIP_STATUS}]}, raw)
        )
        for name, raw in _NUMBERS.items()
    }
    | {
        "results_deep": lambda: _with_raw({"results": RAW}, deep_json().decode()),
        "surrogate_error": lambda: _json(
            {"results": [{"messageId": REF, "status": _REJECTED_STATUS | {"description": "\ud800"}}]}
        ),
    },
    "vonage": {
        f"timestamp_{name}": (
            lambda raw=raw: _with_raw({"status": "delivered", "client_ref": REF, "timestamp": RAW}, raw)
        )
        for name, raw in _NUMBERS.items()
    }
    | {
        "error_deep": lambda: _with_raw(
            {"status": "rejected", "client_ref": REF, "error": RAW}, deep_object().decode()
        ),
        "surrogate_uuid": lambda: _json({"status": "delivered", "client_ref": REF, "message_uuid": "\ud800"}),
    },
}


def webhook_bodies(provider: str) -> dict[str, bytes]:
    """Every hostile body for one JSON provider (Twilio's form bodies are fuzzed instead)."""
    cases = COMMON_BODIES | PROVIDER_BODIES[provider]
    return {name: make() for name, make in cases.items()}
