"""Fixtures the store-level unit tests share."""

from __future__ import annotations

import pytest

from kipuka.store import Store
from tests.helpers import fresh_database_url


@pytest.fixture
def store(tmp_path):
    """A migrated store on a fresh database: PostgreSQL when KIPUKA_TEST_DATABASE names one
    (scripts/test.sh's second pass), else a SQLite file."""
    url = fresh_database_url() or f"sqlite:///{tmp_path / 'k.db'}"
    s = Store(url)
    s.migrate()
    yield s
    s.close()
