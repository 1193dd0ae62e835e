"""Reading recipient files and manual lists, and importing them: every test writes real files into `tmp_path`."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.models import RejectedRow
from domain.spec import MailingSpec, load_spec
from recipients.importer import import_recipients, neutralise, open_source, read_stored, stored_list_path
from recipients.reader import RecipientsError, Row, SourceOptions, Table, read_file, read_manual


def rows_of(table: Table) -> list[Row]:
    return list(table.rows)


def sms_step(text: str) -> dict[str, Any]:
    return {"channel": "sms", "sender": "Shop", "text": text, "wait": "5m"}


def viber_step(text: str) -> dict[str, Any]:
    return {"channel": "viber", "sender": "Shop", "text": text, "wait": "5m"}


def file_spec(path: Path, *texts: str) -> MailingSpec:
    return MailingSpec.model_validate({"name": "Test", "recipients": path, "steps": [sms_step(t) for t in texts]})


def read_rejected(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


# --- recipients.reader ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiters(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "list.csv"
    lines = [["phone", "name", "code"], ["+7 999 000-22-33", "Anna", "A1"], ["79990002244", "Boris", "B2"]]
    path.write_text("".join(delimiter.join(line) + "\n" for line in lines), encoding="utf-8")
    table = read_file(path)
    assert table.header == ["phone", "name", "code"]
    assert table.columns == 3
    anna = {"1": "+7 999 000-22-33", "2": "Anna", "3": "A1", "phone": "+7 999 000-22-33", "name": "Anna", "code": "A1"}
    boris = {"1": "79990002244", "2": "Boris", "3": "B2", "phone": "79990002244", "name": "Boris", "code": "B2"}
    assert rows_of(table) == [Row(2, "+7 999 000-22-33", anna), Row(3, "79990002244", boris)]


def test_semicolon_file_keeps_commas_inside_values(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone;full name\n79990002233;Ivanova, Anna\n", encoding="utf-8")
    [row] = rows_of(read_file(path))
    assert row.variables["full name"] == "Ivanova, Anna"
    assert row.variables["2"] == "Ivanova, Anna"


def test_quoted_cells(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text('phone,greeting\n"+7 999 000-22-33","Hello, ""friend"""\n', encoding="utf-8")
    [row] = rows_of(read_file(path))
    assert row.phone == "+7 999 000-22-33"
    assert row.variables["greeting"] == 'Hello, "friend"'


def test_header_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n79990002233,Anna\n", encoding="utf-8")
    table = read_file(path)
    assert table.header == ["phone", "name"]
    assert table.variable_names == {"phone", "name", "1", "2"}
    assert [row.number for row in rows_of(table)] == [2]


def test_headerless_file_has_positional_variables(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("79990002233,Anna\n8 999 000-22-44,Boris\n", encoding="utf-8")
    table = read_file(path)
    assert table.header is None
    assert table.variable_names == {"1", "2"}
    assert rows_of(table) == [
        Row(1, "79990002233", {"1": "79990002233", "2": "Anna"}),
        Row(2, "8 999 000-22-44", {"1": "8 999 000-22-44", "2": "Boris"}),
    ]


def test_header_names_and_cells_are_stripped(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone , name \n 79990002233 , Anna \n", encoding="utf-8")
    table = read_file(path)
    assert table.header == ["phone", "name"]
    [row] = rows_of(table)
    assert row.variables == {"1": "79990002233", "2": "Anna", "phone": "79990002233", "name": "Anna"}


def test_blank_lines_are_skipped_but_keep_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n79990002233,Anna\n\n , \n79990002244,Boris\n", encoding="utf-8")
    assert [(row.number, row.phone) for row in rows_of(read_file(path))] == [(2, "79990002233"), (5, "79990002244")]


def test_short_row_lacks_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name,code\n79990002233,Anna\n", encoding="utf-8")
    [row] = rows_of(read_file(path))
    assert row.variables == {"1": "79990002233", "2": "Anna", "phone": "79990002233", "name": "Anna"}


def test_utf8_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("телефон;имя\n+79990002233;Анна\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    table = read_file(path)
    assert table.header == ["телефон", "имя"]
    [row] = rows_of(table)
    assert row.variables["имя"] == "Анна"
    assert row.variables["телефон"] == "+79990002233"


def test_windows_1251(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes("телефон;имя;город\r\n+79990002233;Анна;Тверь\r\n".encode("cp1251"))
    table = read_file(path)
    assert table.header == ["телефон", "имя", "город"]
    [row] = rows_of(table)
    assert row.phone == "+79990002233"
    assert row.variables["имя"] == "Анна"
    assert row.variables["город"] == "Тверь"


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"phone\n\x98\x98\n")  # invalid UTF-8, and 0x98 is undefined in Windows-1251
    with pytest.raises(RecipientsError, match=r"list\.csv: cannot decode the text"):
        read_file(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"")
    with pytest.raises(RecipientsError, match=r"list\.csv: the file is empty"):
        read_file(path)


def test_csv_with_only_a_bom_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(RecipientsError, match="the file has no rows"):
        read_file(path)


@pytest.mark.parametrize("name", ["list.docx", "list.json", "list"])
def test_unsupported_suffix(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("79990002233\n", encoding="utf-8")
    with pytest.raises(RecipientsError, match=r"unsupported file type; use \.csv, \.txt, \.xlsx, \.xls"):
        read_file(path)


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "LIST.CSV"
    path.write_text("79990002233\n", encoding="utf-8")
    assert [row.phone for row in rows_of(read_file(path))] == ["79990002233"]


def test_txt_one_number_per_line(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text("+7 999 000-22-33\n\n8 (999) 000-22-44\r\n79990002255", encoding="utf-8")
    table = read_file(path)
    assert table.header is None
    assert table.variable_names == {"1"}
    assert rows_of(table) == [
        Row(1, "+7 999 000-22-33", {"1": "+7 999 000-22-33"}),
        Row(3, "8 (999) 000-22-44", {"1": "8 (999) 000-22-44"}),
        Row(4, "79990002255", {"1": "79990002255"}),
    ]


def test_manual_list_splits_on_comma_semicolon_and_newline() -> None:
    table = read_manual(["+79990002233, 8 999 000-22-44;79990002255\n79990002266", "  ", "79990002277;;"])
    assert table.header is None
    assert table.variable_names == {"1"}
    expected = ["+79990002233", "8 999 000-22-44", "79990002255", "79990002266", "79990002277"]
    assert rows_of(table) == [Row(i, v, {"1": v}) for i, v in enumerate(expected, start=1)]


def test_manual_list_empty() -> None:
    assert rows_of(read_manual([])) == []


# --- recipients.importer -------------------------------------------------------------------------------------

MIXED_CSV = """phone,name,code
+7 999 000-22-33,Anna,A1
abc,Boris,B1
8 (999) 000-22-33,Anna twice,A2

,Nobody,E1
+7 495 123-45-67,Landline,L1
79990002244,,C1
79990002255,Vera,
12345,Short,S1
"""


@pytest.fixture
def mixed_list(tmp_path: Path) -> Path:
    path = tmp_path / "input" / "mixed.csv"
    path.parent.mkdir()
    path.write_text(MIXED_CSV, encoding="utf-8")
    return path


def test_import_counts_and_reasons(tmp_path: Path, mixed_list: Path) -> None:
    spec = file_spec(mixed_list, "Hi {name}, code {code|none}")
    report = import_recipients(spec, tmp_path / "data", "spring")
    assert report.rows == 8  # the blank line is not a row
    assert report.valid == 2
    assert report.duplicates == 1
    assert report.invalid == 5
    assert report.invalid_by_reason == {
        "not a number": 1,
        "empty": 1,
        "not a mobile number": 1,
        "missing variable value": 1,
        "too short": 1,
    }
    assert report.stored_list == stored_list_path(tmp_path / "data", "spring")
    assert report.stored_list == tmp_path / "data" / "mailings" / "spring" / "recipients.jsonl"
    assert report.rejected_file == tmp_path / "data" / "mailings" / "spring" / "rejected.csv"


def test_rejected_file_lists_row_value_and_reason(tmp_path: Path, mixed_list: Path) -> None:
    report = import_recipients(file_spec(mixed_list, "Hi {name}, code {code|none}"), tmp_path / "data", "spring")
    assert report.rejected_file is not None
    expected = [
        ["3", "abc", "not a number"],
        ["4", "8 (999) 000-22-33", "duplicate of row 2"],
        ["6", "", "empty"],
        ["7", "+7 495 123-45-67", "not a mobile number"],
        ["8", "79990002244", "missing variable value: {name}"],
        ["10", "12345", "too short"],
    ]
    in_file = [[r, neutralise(v), why] for r, v, why in expected]  # `+7 …` is written `'+7 …` (see test_exports)
    assert read_rejected(report.rejected_file) == [["row", "value", "reason"], *in_file]
    assert report.rejected_sample == [RejectedRow(row=int(r), value=v, reason=why) for r, v, why in expected]


def test_stored_list_keeps_the_first_of_duplicates_and_only_the_variables_used(
    tmp_path: Path, mixed_list: Path
) -> None:
    report = import_recipients(file_spec(mixed_list, "Hi {name}, code {code|none}"), tmp_path / "data", "spring")
    assert report.stored_list is not None
    anna = {"name": "Anna", "code": "A1"}
    vera = {"name": "Vera", "code": ""}
    assert list(read_stored(report.stored_list)) == [(0, "+79990002233", anna, None), (1, "+79990002255", vera, None)]
    assert list(read_stored(report.stored_list, start=1)) == [(1, "+79990002255", vera, None)]
    assert list(read_stored(report.stored_list, start=2)) == []


def test_missing_value_is_checked_in_every_step(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name,code\n79990002233,Anna,\n79990002244,Boris,B2\n", encoding="utf-8")
    spec = MailingSpec.model_validate(
        {"name": "Test", "recipients": path, "steps": [viber_step("Hi {name}"), sms_step("Code {code}")]}
    )
    report = import_recipients(spec, tmp_path / "data", "two-steps")
    assert (report.valid, report.invalid) == (1, 1)
    assert report.rejected_sample == [RejectedRow(row=2, value="79990002233", reason="missing variable value: {code}")]
    assert report.stored_list is not None
    assert [r.phone for r in read_stored(report.stored_list)] == ["+79990002244"]


def test_missing_value_row_does_not_hide_a_later_complete_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n79990002233,\n+7 999 000-22-33,Anna\n", encoding="utf-8")
    report = import_recipients(file_spec(path, "Hi {name}"), tmp_path / "data", "m")
    assert (report.valid, report.invalid, report.duplicates) == (1, 1, 0)
    assert report.stored_list is not None
    [(_, phone, variables, _)] = list(read_stored(report.stored_list))
    assert (phone, variables["name"]) == ("+79990002233", "Anna")


def test_import_headerless_file_with_positional_variables(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("79990002233;Anna\n79990002244;Boris\n", encoding="utf-8")
    report = import_recipients(file_spec(path, "Hi {2}"), tmp_path / "data", "pos")
    assert (report.rows, report.valid, report.invalid) == (2, 2, 0)
    assert report.stored_list is not None
    assert [(r.phone, r.variables["2"]) for r in read_stored(report.stored_list)] == [
        ("+79990002233", "Anna"),
        ("+79990002244", "Boris"),
    ]


def test_import_cp1251_file_via_load_spec(tmp_path: Path) -> None:
    (tmp_path / "люди.csv").write_bytes("телефон;имя\n89990002233;Анна\n".encode("cp1251"))
    spec_path = tmp_path / "mailing.toml"
    spec_path.write_text(
        'name = "Весна"\nrecipients = "люди.csv"\n\n[[steps]]\nchannel = "sms"\nsender = "Shop"\n'
        'text = "Здравствуйте, {имя}"\nwait = "5m"\n',
        encoding="utf-8",
    )
    report = import_recipients(load_spec(spec_path), tmp_path / "data", "vesna")
    assert report.valid == 1
    assert report.stored_list is not None
    [(_, phone, variables, _)] = list(read_stored(report.stored_list))
    assert (phone, variables["имя"]) == ("+79990002233", "Анна")


def test_import_manual_numbers(tmp_path: Path) -> None:
    spec = MailingSpec.model_validate(
        {"name": "Manual", "numbers": ["+79990002233, 8 999 000-22-33; abc", "79990002244"], "steps": [sms_step("{1}")]}
    )
    report = import_recipients(spec, tmp_path / "data", "manual")
    assert (report.rows, report.valid, report.invalid, report.duplicates) == (4, 2, 1, 1)
    assert report.invalid_by_reason == {"not a number": 1}
    assert report.stored_list is not None
    assert list(read_stored(report.stored_list)) == [
        (0, "+79990002233", {"1": "+79990002233"}, None),
        (1, "+79990002244", {"1": "79990002244"}, None),
    ]
    assert report.rejected_file is not None
    assert read_rejected(report.rejected_file)[1:] == [
        ["2", "8 999 000-22-33", "duplicate of row 1"],
        ["3", "abc", "not a number"],
    ]


def test_import_is_repeatable(tmp_path: Path, mixed_list: Path) -> None:
    spec = file_spec(mixed_list, "Hi {name}, code {code|none}")
    first = import_recipients(spec, tmp_path / "data", "again")
    assert first.stored_list is not None and first.rejected_file is not None
    stored, rejected = first.stored_list.read_text(encoding="utf-8"), first.rejected_file.read_text(encoding="utf-8")
    second = import_recipients(spec, tmp_path / "data", "again")
    assert second == first
    assert first.stored_list.read_text(encoding="utf-8") == stored
    assert first.rejected_file.read_text(encoding="utf-8") == rejected
    assert sorted(p.name for p in first.stored_list.parent.iterdir()) == [
        "recipients.jsonl",
        "rejected.csv",
        "rejected.jsonl",
    ]


def test_open_source_names_the_step_and_the_unknown_variable(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n79990002233,Anna\n", encoding="utf-8")
    spec = MailingSpec.model_validate(
        {
            "name": "Test",
            "recipients": path,
            "steps": [viber_step("Hi {name} from {city|Moscow}"), sms_step("Hi {name}, your {city}")],
        }
    )
    with pytest.raises(RecipientsError) as caught:
        open_source(spec)
    assert str(caught.value) == (
        "steps.1.text uses {city}, which the recipients do not have (columns: name, phone, 1, 2)"
    )
    with pytest.raises(RecipientsError, match=r"steps\.1\.text uses \{city\}"):
        import_recipients(spec, tmp_path / "data", "m")
    assert not (tmp_path / "data" / "mailings" / "m" / "recipients.jsonl").exists()


def test_open_source_rejects_a_column_number_beyond_the_file(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("79990002233,Anna\n", encoding="utf-8")
    with pytest.raises(RecipientsError, match=r"steps\.0\.text uses \{3\}, which the recipients do not have"):
        open_source(file_spec(path, "Hi {2}, {3}"))


def test_open_source_manual_list_has_only_column_1() -> None:
    spec = MailingSpec.model_validate({"name": "Manual", "numbers": ["79990002233"], "steps": [sms_step("Hi {name}")]})
    with pytest.raises(RecipientsError, match=r"steps\.0\.text uses \{name\}.*\(columns: 1\)"):
        open_source(spec)


def test_open_source_accepts_known_and_defaulted_variables(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n79990002233,Anna\n", encoding="utf-8")
    table = open_source(file_spec(path, "Hi {name}, {2}, {city|friend}"))
    assert [row.phone for row in table.rows] == ["79990002233"]


def test_a_malformed_csv_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text('phone,name\n79990002233,"unclosed\n' + "x" * 140_000 + "\n", encoding="utf-8")
    with pytest.raises(RecipientsError, match="malformed CSV near line"):
        list(read_file(path).rows)


def test_leading_blank_lines_do_not_hide_the_delimiter_or_shift_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("\n\nphone;name\n79990002233;Anna\n", encoding="utf-8")
    table = read_file(path)
    rows = list(table.rows)
    assert table.header == ["phone", "name"]
    assert [(r.number, r.phone, r.variables["name"]) for r in rows] == [(4, "79990002233", "Anna")]


# --- declared header and phone column, landlines, limits ----------------------------------------------------


def test_phone_column_declared_by_header_name(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("id;client;cell\n1;Anna;+79990002233\n", encoding="utf-8")
    table = read_file(path, SourceOptions(phone_column="Cell"))
    assert [(row.number, row.phone) for row in table.rows] == [(2, "+79990002233")]


def test_phone_column_declared_by_number_in_a_headerless_file(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("1;Anna;+79990002233\n2;Boris;+79990002244\n", encoding="utf-8")
    table = read_file(path, SourceOptions(phone_column=3))
    assert table.header is None
    assert [row.phone for row in table.rows] == ["+79990002233", "+79990002244"]


def test_header_declared_absent_makes_the_first_row_data(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone\n+79990002233\n", encoding="utf-8")
    table = read_file(path, SourceOptions(header=False))
    assert [(row.number, row.phone) for row in table.rows] == [(1, "phone"), (2, "+79990002233")]


def test_header_declared_present_even_if_it_looks_like_data(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("2024 list,name\n+79990002233,Anna\n", encoding="utf-8")
    table = read_file(path, SourceOptions(header=True))
    assert table.header == ["2024 list", "name"]
    assert [row.number for row in table.rows] == [2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SourceOptions(phone_column="mobile"), r"phone_column: no column named 'mobile' \(columns: id, client\)"),
        (SourceOptions(phone_column=3), r"phone_column: column 3 does not exist \(the file has 2\)"),
        (SourceOptions(phone_column=0), r"phone_column: column 0 does not exist"),
        (SourceOptions(header=False, phone_column="client"), r"phone_column: 'client' is a column name, but the"),
    ],
)
def test_a_declared_phone_column_that_is_not_there_is_an_error(
    tmp_path: Path, options: SourceOptions, message: str
) -> None:
    path = tmp_path / "list.csv"
    path.write_text("id,client\n1,+79990002233\n", encoding="utf-8")
    with pytest.raises(RecipientsError, match=message):
        read_file(path, options)


def test_spec_options_reach_the_import(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("id;cell\n1;+7 495 123-45-67\n2;+7 999 000-22-33\n", encoding="utf-8")
    spec_path = tmp_path / "mailing.toml"
    spec_path.write_text(
        'name = "Offices"\nrecipients = "list.csv"\nphone_column = "cell"\nkeep_landlines = true\n'
        '[[steps]]\nchannel = "sms"\nsender = "Shop"\ntext = "Hi"\nwait = "5m"\n',
        encoding="utf-8",
    )
    report = import_recipients(load_spec(spec_path), tmp_path / "data", "offices")
    assert (report.rows, report.valid, report.invalid) == (2, 2, 0)


def test_landlines_are_refused_unless_kept(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("+7 495 123-45-67\n", encoding="utf-8")
    refused = import_recipients(file_spec(path, "Hi"), tmp_path / "data", "a")
    assert refused.invalid_by_reason == {"not a mobile number": 1}
    kept = import_recipients(file_spec(path, "Hi").model_copy(update={"keep_landlines": True}), tmp_path / "d", "b")
    assert kept.valid == 1


def test_file_options_are_refused_for_a_manual_list() -> None:
    with pytest.raises(ValueError, match=r"sheet, phone_column: only for a `recipients` file"):
        MailingSpec.model_validate(
            {"name": "T", "numbers": ["+79990002233"], "sheet": "A", "phone_column": 1, "steps": [sms_step("Hi")]}
        )


def test_a_file_over_128_mb_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as file:
        file.truncate(128 * 1024 * 1024 + 1)  # sparse: no disk space used
    with pytest.raises(RecipientsError, match=r"huge\.csv: 134217729 bytes is over the 128 MB limit"):
        read_file(path)


def test_csv_progress_is_reported_up_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("".join(f"+7999{i:07d}\n" for i in range(25_000)), encoding="utf-8")
    seen: list[float] = []
    assert sum(1 for _ in read_file(path, progress=seen.append).records) == 25_000
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1.0


# --- subscriber time zones ----------------------------------------------------------------------------------


def subscriber_spec(path: Path, hours: str) -> MailingSpec:
    return MailingSpec.model_validate(
        {
            "name": "Zones",
            "recipients": path,
            "schedule": {"timezone": "subscriber", "hours": hours},
            "steps": [sms_step("Hi")],
        }
    )


def test_subscriber_zones_come_from_the_file_or_from_the_number(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "phone,timezone\n+79990000001,Asia/Novosibirsk\n+79990000002,\n+79990000003,Mars/Base\n+442079460000,\n",
        encoding="utf-8",
    )
    spec = subscriber_spec(path, "10:00-23:00").model_copy(update={"keep_landlines": True})
    report = import_recipients(spec, tmp_path / "data", "zones", now=datetime(2026, 12, 1, tzinfo=UTC))
    assert report.invalid_by_reason == {"unknown time zone": 1}
    assert report.rejected_sample[0].reason == "unknown time zone: 'Mars/Base'"
    assert report.stored_list is not None
    zones = {r.phone: r.zones for r in read_stored(report.stored_list)}
    assert zones["+79990000001"] == ["Asia/Novosibirsk"]
    assert zones["+79990000002"] is not None and len(zones["+79990000002"]) > 10  # a Russian mobile: 16 zones
    assert zones["+442079460000"] == ["Europe/London"]
    assert report.zone_fallback == 0


def test_zones_without_a_common_window_fall_back_and_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("phone\n+79990000001\n+79990000002\n", encoding="utf-8")
    report = import_recipients(
        subscriber_spec(path, "18:00-21:00"), tmp_path / "data", "evening", now=datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert report.valid == 2 and report.zone_fallback == 2
    assert report.stored_list is not None
    assert [r.zones for r in read_stored(report.stored_list)] == [["Europe/Moscow"], ["Europe/Moscow"]]


def test_the_rejected_sample_cuts_long_values(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("phone\n" + "x" * 5000 + "\n", encoding="utf-8")
    report = import_recipients(file_spec(path, "Hi"), tmp_path / "data", "m1")
    assert report.rejected_sample[0].value == "x" * 100 + "…"
    assert read_rejected(tmp_path / "data" / "mailings" / "m1" / "rejected.csv")[1][1] == "x" * 5000
