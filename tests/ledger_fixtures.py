"""The `ledger_url` fixture: every ledger test runs against SQLite and against PostgreSQL.

Use it in any test that needs a ledger (it is registered in tests/conftest.py):

    def test_something(ledger_url: str) -> None:
        ledger = Ledger(ledger_url)   # an empty database, migrated on open
        try:
            ...
        finally:
            ledger.close()

- `sqlite`: a fresh SQLite file in the test's tmp_path.
- `postgresql`: one database per test session, `kaskad_test_<random>`, created on the server at
  KASKAD_TEST_POSTGRES (default `postgresql://postgres@127.0.0.1:5432/postgres`, trust auth, as on our
  development and CI machines) and dropped at the end of the session. Each test gets it empty: its `public`
  schema is dropped and re-created before the test, so tests never see each other's rows. Close your
  Ledger (engines) at the end of the test.
- The PostgreSQL leg is skipped, with the reason, only when no server answers at that address; any other
  failure (authentication, a missing privilege) is an error, not a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

POSTGRES_SERVER = os.environ.get("KASKAD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A fresh database on the test PostgreSQL server for this session (its URL), or None with no server."""
    try:
        admin = psycopg.connect(_dsn(POSTGRES_SERVER), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).lower()
        if any(sign in reason for sign in ("refused", "timeout", "timed out", "could not translate", "no such file")):
            yield None  # no server answers: the PostgreSQL leg is skipped
            return
        raise  # a server answered and refused us: that is a failure to see, not a skip
    name = f"kaskad_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield _dsn(POSTGRES_SERVER, name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty ledger database: a SQLite file, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    url: str | None = request.getfixturevalue("postgres_database")
    if url is None:
        pytest.skip(f"PostgreSQL leg skipped: no PostgreSQL server answers at {_shown(POSTGRES_SERVER)}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url
