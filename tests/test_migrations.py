"""Schema migrations: a database made by an older kipuka upgrades without losing a record."""

import sqlite3
from pathlib import Path

from sqlalchemy import inspect

from kipuka.store import Store
from kipuka.store.migrations import LATEST

V1_DUMP = Path(__file__).parent / "fixtures" / "schema-v1.sql"


def test_a_version_1_database_upgrades_to_the_latest_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_DUMP.read_text())
        before = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("certificates", "otps", "audit")}
    store = Store(f"sqlite:///{db}")
    assert store.schema_version() == 1
    assert store.migrate() == list(range(2, LATEST + 1))
    assert store.schema_version() == LATEST
    assert store.migrate() == []
    with sqlite3.connect(db) as conn:
        after = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in before}
    assert after == before and before["certificates"] > 0
    assert len(store.certificates(limit=100)) == before["certificates"]


def test_a_new_database_gets_the_latest_schema_in_one_step(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.migrate() == [LATEST]
    assert store.schema_version() == LATEST


def test_upgraded_and_new_databases_have_the_same_tables_and_columns(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(V1_DUMP.read_text())
    upgraded, fresh = Store(f"sqlite:///{old}"), Store(f"sqlite:///{tmp_path / 'new.db'}")
    upgraded.migrate()
    fresh.migrate()

    def shape(store):
        with store._writer.connect() as conn:
            insp = inspect(conn)
            return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}
    assert shape(upgraded) == shape(fresh)
