"""Issue 10, item 5: hostile spec files end in `error: <file or field>: <reason>` and exit 1, never a traceback.

The corpus is `tests/hostile.SPEC_CASES`; the CLI runs in a child process whose address space is capped, so a
regression to tomllib's quadratic dotted keys fails fast instead of taking the machine's memory.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.spec import MailingSpec, SpecError, load_spec
from tests.hostile import SPEC_CASES, VALID_SPEC, write_spec

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP = 3 * 1024**3  # bytes of address space for the CLI child: the CLI itself needs a few hundred MB


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_cli(command: str, paths: list[Path]) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.hostile.cli_driver", command, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        preexec_fn=_cap_memory,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mark = "@@hostile@@ "
    return [json.loads(line.removeprefix(mark)) for line in result.stdout.splitlines() if line.startswith(mark)]


def test_every_hostile_spec_is_a_clean_error(tmp_path: Path) -> None:
    paths = [write_spec(case, tmp_path) for case in SPEC_CASES]
    outcomes = {Path(str(o["path"])).stem: o for o in run_cli("validate", paths)}
    bad = {
        case: (o["code"], str(o["stderr"])[-600:])
        for case, o in outcomes.items()
        if o["code"] != 1 or not str(o["stderr"]).startswith("error: ") or "Traceback" in str(o["stderr"])
    }
    assert not bad, bad
    assert set(outcomes) == set(SPEC_CASES)


@pytest.mark.parametrize("command", ["preview", "start"])
def test_preview_and_start_refuse_them_the_same_way(tmp_path: Path, command: str) -> None:
    paths = [write_spec(case, tmp_path) for case in ("utf16", "dotted_key_50k", "deep_array", "wait_overflow")]
    for outcome in run_cli(command, paths):
        assert outcome["code"] == 1 and str(outcome["stderr"]).startswith("error: "), outcome


def test_the_real_cli_prints_one_error_line_for_a_utf16_spec(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), "validate", str(write_spec("utf16", tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "utf16.toml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("utf16", "not UTF-8"),
        ("binary", "not UTF-8"),
        ("oversized", "larger than"),
        ("deep_array", "nested deeper than"),
        ("deep_inline_table", "nested deeper than"),
        ("dotted_key_50k", "dotted key of more than"),
        ("dotted_table_50k", "dotted key of more than"),
        ("nul_in_recipients", "recipients: "),
        ("wait_overflow", "steps.0.wait: "),
        ("late_reports_overflow", "late_reports: "),
        ("int_5000_digits", "int_5000_digits.toml: not valid TOML: a number"),
        ("late_reports_999999999d", "late_reports: must be between 0s and 72h"),
        ("speed_seconds_7", "speed: "),
    ],
)
def test_the_reason_names_the_file_or_field(tmp_path: Path, case: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(case, tmp_path))
    assert reason in str(caught.value)


def test_a_spec_with_a_utf8_bom_or_dots_and_brackets_in_strings_still_loads(tmp_path: Path) -> None:
    """The cheap structure check skips strings and comments: texts full of dots and brackets are fine."""
    text = VALID_SPEC.replace('"hi"', '"' + "[{." * 200 + '"') + "# " + "[." * 200 + "\n"
    path = tmp_path / "ok.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_spec(path).steps[0].text == "[{." * 200


def _loads_or_refuses(path: Path) -> None:
    with contextlib.suppress(SpecError):
        assert isinstance(load_spec(path), MailingSpec)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_random_bytes_load_or_are_refused_with_a_spec_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    _loads_or_refuses(path)


_VALUES = st.one_of(
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(['"99999999999999999999h"', '"0s"', '"-5m"', "1e999", "nan", "inf", "9999-12-31T23:59:59"]),
    st.sampled_from(["[" * 50 + "]" * 50, "{a = " * 30 + "1" + "}" * 30, "a." * 40 + "a"]),
)
_FIELDS = st.sampled_from(
    ["name", "wait", "late_reports", "speed", "start_at", "end_at", "region", "recipients", "provider", "sender"]
)


def _toml_value(value: object) -> str:
    if isinstance(value, str) and not value.startswith(('"', "[", "{", "1e", "nan", "inf", "9999", "a.")):
        return json.dumps(value)  # a TOML basic string (JSON escapes are TOML escapes, surrogates aside)
    return str(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=_FIELDS, value=_VALUES)
def test_mutated_valid_specs_load_or_are_refused_with_a_spec_error(tmp_path: Path, field: str, value: object) -> None:
    line = f"{field} = {_toml_value(value)}"
    lines = VALID_SPEC.splitlines()
    if field in ("wait", "sender"):
        lines = [ln for ln in lines if not ln.startswith(f"{field} =")] + [line]
    else:
        lines = [line] + [ln for ln in lines if not ln.startswith(f"{field} =")]
    path = tmp_path / "mutated.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    _loads_or_refuses(path)
