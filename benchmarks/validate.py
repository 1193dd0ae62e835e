"""Recipient validation speed and memory against a raw read of the same file.

Generates (once, in --dir) a .csv and an .xlsx of N rows in the realistic mix of recipients/samples.py, then,
each measurement in a fresh process so that peak RSS is its own:

* raw-csv:       the csv module iterating the rows (no decoding detection, no validation)
* validate-csv:  what `starter.py validate --rejected rejected.csv` does: read, classify, dedupe, write rejects
* raw-xlsx:      calamine loading the sheet and iterating its rows
* stream-xlsx:   kaskad's streaming .xlsx reader iterating the rows (no validation)
* validate-xlsx: as validate-csv, for the .xlsx

Prints rows/s, peak RSS and the ratios validation/raw; medians over --rounds. Then checks that the fast
classifier gives exactly what plain phonenumbers gives (`normalize_phone`) for the first --sample rows.

    .venv/bin/python benchmarks/validate.py [--rows 1000000] [--rounds 1] [--sample 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from python_calamine import CalamineWorkbook

from domain.phones import PhoneClassifier, normalize_phone
from recipients.importer import ListRules, rejected_writer, validate_rows
from recipients.reader import read_file
from recipients.samples import sample_rows, write_csv, write_xlsx
from recipients.xlsx import stream_rows

KINDS = ("raw-csv", "validate-csv", "raw-xlsx", "stream-xlsx", "validate-xlsx")


def measure(kind: str, path: Path) -> dict[str, float]:
    """One measurement in this process: rows read and seconds taken."""
    started = time.perf_counter()
    rows = 0
    if kind == "raw-csv":
        with path.open(encoding="utf-8", newline="") as file:
            for _ in csv.reader(file, delimiter=";"):
                rows += 1
    elif kind == "raw-xlsx":
        for _ in CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).iter_rows():
            rows += 1
    elif kind == "stream-xlsx":
        for _ in stream_rows(path, None, lambda _: None):
            rows += 1
    else:
        with tempfile.TemporaryDirectory() as scratch, rejected_writer(Path(scratch) / "rejected.csv") as out:
            report = validate_rows(read_file(path), ListRules(), out)
        rows = report.rows + 1  # and the header, as the raw reads count it
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peak_mb}


def run_measurement(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(path)], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def check_exactness(count: int) -> tuple[int, int]:
    """(rows compared, rows where the fast classifier and plain phonenumbers disagree)."""
    fast = PhoneClassifier()
    mismatches = 0
    for phone, _, _ in sample_rows(count):
        text = str(phone)
        if fast.classify(text) != normalize_phone(text):
            mismatches += 1
    return count, mismatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sample", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "kaskad-bench")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": args.dir / f"list-{args.rows}.csv", "xlsx": args.dir / f"list-{args.rows}.xlsx"}
    for suffix, writer in (("csv", write_csv), ("xlsx", write_xlsx)):
        if not files[suffix].exists():
            print(f"generating {files[suffix]} …", file=sys.stderr, flush=True)
            writer(files[suffix], args.rows)
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for round_number in range(1, args.rounds + 1):
        for kind in KINDS:
            results[kind].append(run_measurement(kind, files[kind.rpartition("-")[2]]))
            print(f"round {round_number} {kind}: {results[kind][-1]}", file=sys.stderr, flush=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    print(f"{args.rows} rows, {args.rounds} round(s), medians")
    print(f"{'measurement':15} {'rows/s':>10} {'peak RSS MB':>12}")
    for kind in KINDS:
        print(f"{kind:15} {median(kind, 'rows_per_s'):>10.0f} {median(kind, 'peak_rss_mb'):>12.0f}")
    for fmt, raw in (("csv", "raw-csv"), ("xlsx", "raw-xlsx"), ("xlsx", "stream-xlsx")):
        ratio = median(f"validate-{fmt}", "rows_per_s") / median(raw, "rows_per_s")
        print(f"ratio validate-{fmt} / {raw}: {ratio:.2f}")
    compared, mismatches = check_exactness(args.sample)
    print(f"classification vs plain phonenumbers: {mismatches} mismatches in {compared} rows")


if __name__ == "__main__":
    main()
