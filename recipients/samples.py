"""Recipient lists as people bring them, generated: for the validation benchmark, tests and trials.

Each row is (phone cell, name, city). The phone cells mix the notations and artefacts of real lists:
Russian mobiles written five ways, spreadsheet debris (NBSP, apostrophe, `tel:`, numeric cells), landlines,
foreign numbers, duplicates in another notation, typos (a digit missing or extra), text and empty cells.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

from openpyxl import Workbook

Cell = str | int


def _mobile(rng: random.Random) -> str:
    return f"9{rng.randrange(100):02d}{rng.randrange(10**7):07d}"


def _notations(national: str) -> list[Cell]:
    """One Russian mobile (10 digits) in the notations lists hold it."""
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    return [f"+7 {a} {b}-{c}-{d}", f"8 ({a}) {b}-{c}-{d}", int("7" + national), national, f"+7{national}"]


def phone_cells(rng: random.Random) -> Iterator[Cell]:
    """An endless stream of phone cells in a realistic mix."""
    recent: list[str] = []
    while True:
        roll = rng.random()
        if roll < 0.76:
            national = _mobile(rng)
            recent.append(national)
            if len(recent) > 1000:
                recent.pop(0)
            yield rng.choice(_notations(national))
        elif roll < 0.81 and recent:  # the same subscriber again, written another way
            yield rng.choice(_notations(rng.choice(recent)))
        elif roll < 0.85:
            national = _mobile(rng)
            yield rng.choice([f"'+7{national}", f"\u00a08 {national}\u00a0", f"tel:+7{national}", f" 7-{national} "])
        elif roll < 0.90:
            yield rng.choice(["+7 (495) ", "8 812 ", "+7 343 ", "8 (800) "]) + f"{rng.randrange(10**7):07d}"
        elif roll < 0.94:
            prefix = rng.choice(["+49 151 ", "+380 50 ", "+1 212 ", "+44 7911 ", "+7 701 ", "+375 29 ", "+86 138 "])
            yield prefix + "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 9)))
        elif roll < 0.98:  # typos: a digit missing or one too many, or a truncated cell
            national = _mobile(rng)
            cut = rng.randrange(len(national))
            typo = rng.choice(
                [national[:cut] + national[cut + 1 :], national[:cut] + "5" + national[cut:], national[:cut]]
            )
            yield rng.choice(["+7", "8", "", "7"]) + typo
        else:
            yield rng.choice(["", "нет", "n/a", "7,99912E+10", "8-800-555-35-35 доб. 12", "+7 999 123 45 67 ext 5"])


def sample_rows(count: int, seed: int = 1) -> Iterator[tuple[Cell, str, str]]:
    rng = random.Random(seed)
    cities = ["Москва", "Казань", "Tver", "Омск", ""]
    for index, phone in zip(range(count), phone_cells(rng), strict=False):
        yield phone, f"Клиент {index}", cities[index % len(cities)]


def write_csv(path: Path, count: int, seed: int = 1) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter=";")
        writer.writerow(["телефон", "имя", "город"])
        writer.writerows(sample_rows(count, seed))


def write_xlsx(path: Path, count: int, seed: int = 1) -> None:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Клиенты")
    sheet.append(["телефон", "имя", "город"])
    for row in sample_rows(count, seed):
        sheet.append(row)
    workbook.save(path)
