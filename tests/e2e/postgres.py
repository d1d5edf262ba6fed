"""Throwaway PostgreSQL databases for tests: ``CREATE DATABASE gate_test_<random>``,
dropped afterwards. Skips (not fails) when the server is unreachable, unless
``GATE_REQUIRE_POSTGRES=1``. Server: ``GATE_TEST_PG_ADMIN_URL`` (default: postgres on
127.0.0.1:5432, database ``test``, trust auth)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy

ADMIN_URL = os.environ.get("GATE_TEST_PG_ADMIN_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _unavailable(exc: Exception) -> None:
    if os.environ.get("GATE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL unreachable at {ADMIN_URL} (GATE_REQUIRE_POSTGRES=1): "
                    f"{type(exc).__name__}")
    pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")


@pytest.fixture
def pg_url_factory() -> Iterator[Callable[[], str]]:
    """Call it to get the URL of a fresh, empty database (each dropped at teardown)."""
    try:
        pytest.importorskip("psycopg")
    except pytest.skip.Exception as exc:
        _unavailable(RuntimeError(str(exc)))
    admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT",
                                     connect_args={"connect_timeout": 3})
    created: list[str] = []

    def make() -> str:
        name = f"gate_test_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        except Exception as exc:
            _unavailable(exc)
        created.append(name)
        return ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    try:
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


@pytest.fixture
def pg_url(pg_url_factory: Callable[[], str]) -> str:
    return pg_url_factory()
