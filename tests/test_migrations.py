"""Schema migrations: a database made by an older kipuka upgrades without losing a record."""

import sqlite3
from pathlib import Path

from sqlalchemy import inspect

from kipuka.store import Store
from kipuka.store.migrations import LATEST, MIGRATIONS

V1_DUMP = Path(__file__).parent / "fixtures" / "schema-v1.sql"


def steps_after(version: int) -> list[int]:
    """The step numbers an upgrade from `version` runs (numbers may jump: branches reserve them)."""
    return [number for number, _, _ in MIGRATIONS if number > version]


def test_a_version_1_database_upgrades_to_the_latest_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_DUMP.read_text())
        before = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("certificates", "otps", "audit")}
    store = Store(f"sqlite:///{db}")
    assert store.schema_version() == 1
    assert store.migrate() == steps_after(1)
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


def taken_back(tmp_path, version: int, *statements: str) -> Store:
    """A current SQLite database taken back to `version` by `statements` (what the later steps
    added, dropped; rows an older one held, inserted), opened again: the next migrate() upgrades it."""
    db = tmp_path / f"v{version}.db"
    store = Store(f"sqlite:///{db}")
    store.migrate()
    store.close()
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"UPDATE schema_version SET version = {version}")
    return Store(f"sqlite:///{db}")


def test_a_version_3_database_gains_the_remote_ca_request_id_and_keeps_its_pending_requests(tmp_path):
    """v4 adds pending_requests.ca_ref (a request a Dogtag or upstream EST CA holds) to existing rows."""
    old = taken_back(  # without the column, one pending row
        tmp_path, 3, "ALTER TABLE pending_requests DROP COLUMN ca_ref",
        "INSERT INTO pending_requests (op, label, ca_id, requester, entity, auth, client_addr, "
        "pubkey_sha256, csr_der, subject, sans, status, reason, created_at, expires_at) VALUES "
        "('enroll', '', 'default', 'otp:dev', 'dev', 'otp', '127.0.0.1', 'ab', x'30', 'CN=dev', '', "
        "'pending', '', '2026-01-01 00:00:00', '2036-01-01 00:00:00')")
    assert old.migrate() == steps_after(3)
    [row] = old.pending_requests()
    assert row.subject == "CN=dev" and row.ca_ref is None
    assert old.migrate() == []


def test_a_version_5_database_gains_the_brski_tables_and_keeps_its_rows(tmp_path):
    """v7 adds the BRSKI tables (pledges, LDevID links, ownership rules) beside existing data."""
    old = taken_back(tmp_path, 5, *(f"DROP TABLE {table}" for table in ("brski_pledges", "brski_ldevids",
                                                                         "brski_ownership")))
    assert old.migrate() == steps_after(5)
    assert old.brski_rules() == []
    assert old.migrate() == []


def _pg_url() -> str | None:
    import os
    url = os.environ.get("KIPUKA_TEST_DATABASE") or "postgresql://127.0.0.1:5432/test"
    try:
        import psycopg
        with psycopg.connect(url, connect_timeout=3):
            return url
    except Exception:
        return None


def test_postgresql_upgrades_from_version_1_to_the_latest_schema():
    """The same steps on PostgreSQL: a database taken back to version 1 upgrades to what a new one has."""
    import uuid
    import psycopg
    import pytest

    admin = _pg_url()
    if admin is None:
        pytest.skip("no PostgreSQL reachable (scripts/test.sh starts it)")
    names = [f"kipuka_mig_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    old_url, new_url = (admin.rsplit("/", 1)[0] + "/" + n for n in names)
    try:
        old = Store(old_url)
        old.migrate()
        # Take it back to version 1: drop everything versions 2 and 3 added.
        with old._writer.begin() as conn:
            from sqlalchemy import text
            for table in ("pending_requests", "crl_state", "admin_tokens", "audit_chain", "escrowed_keys",
                          "cmc_replay"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(text("DROP INDEX IF EXISTS ux_audit_chain_seq"))
            conn.execute(text("DROP INDEX IF EXISTS ix_certificates_revoked"))
            conn.execute(text("DROP INDEX IF EXISTS ix_certificates_label_id"))
            for column in ("chain_seq", "prev_hash", "hash"):
                conn.execute(text(f"ALTER TABLE audit DROP COLUMN {column}"))
            conn.execute(text("UPDATE schema_version SET version = 1"))
        assert old.schema_version() == 1
        assert old.migrate() == steps_after(1)
        new = Store(new_url)
        assert new.migrate() == [LATEST]

        def shape(store):
            with store._writer.connect() as conn:
                insp = inspect(conn)
                return {t: (sorted(c["name"] for c in insp.get_columns(t)),
                            sorted(i["name"] for i in insp.get_indexes(t))) for t in insp.get_table_names()}
        assert shape(old) == shape(new)
        old.close()
        new.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgresql_audit_keeps_an_admin_name_longer_than_16_characters():
    """v5: the acting admin ("token:NAME", "cert:SUBJECT") is written whole; VARCHAR(16) refused it."""
    import datetime as dt
    import uuid

    import psycopg
    import pytest

    from kipuka.store.records import AuditEvent

    admin = _pg_url()
    if admin is None:
        pytest.skip("no PostgreSQL reachable (scripts/test.sh starts it)")
    name = f"kipuka_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        store = Store(admin.rsplit("/", 1)[0] + "/" + name)
        store.migrate()
        with store._writer.begin() as conn:  # take it back to version 4, where auth was VARCHAR(16)
            from sqlalchemy import text
            conn.execute(text("ALTER TABLE audit ALTER COLUMN auth TYPE VARCHAR(16)"))
            conn.execute(text("UPDATE schema_version SET version = 4"))
        assert store.migrate() == steps_after(4)
        actor = "cert:CN=admin-ops.example.com"
        store.add_audit(AuditEvent(event="otp.create", outcome="success", auth=actor,
                                   at=dt.datetime.now(dt.timezone.utc)))
        assert store.audit_events(1)[0].auth == actor
        store.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_version_7_database_without_the_lineage_columns_still_gets_them(tmp_path):
    """v6 (renewal lineage) merged after v7 (BRSKI) shipped: a database already at 7 runs it anyway."""
    store = taken_back(tmp_path, 7, "DROP INDEX ix_certificates_expires_id", "DROP INDEX ix_certificates_replaces",
                       "ALTER TABLE certificates DROP COLUMN replaces_serial",
                       "ALTER TABLE certificates DROP COLUMN replaces_ca")
    assert store.migrate() == [6, 8]
    with store._writer.connect() as conn:
        insp = inspect(conn)
        assert {"replaces_ca", "replaces_serial"} <= {c["name"] for c in insp.get_columns("certificates")}
        assert {"ix_certificates_expires_id", "ix_certificates_replaces"} <= {
            i["name"] for i in insp.get_indexes("certificates")}
    assert store.migrate() == []


def test_a_version_7_database_gets_the_requested_names_columns(tmp_path):
    """v8: the names a request asked for where a remote CA certified others; existing rows keep NULL."""
    store = taken_back(
        tmp_path, 7, "ALTER TABLE certificates DROP COLUMN requested_sans",
        "ALTER TABLE certificates DROP COLUMN requested_subject",
        "INSERT INTO certificates (ca_id, serial, subject, sans, not_before, not_after, label, entity, auth, "
        "pubkey_sha256, fingerprint_sha256, der, issued_at) VALUES ('default', '1a', 'CN=dev', 'dev', "
        "'2026-01-01 00:00:00', '2027-01-01 00:00:00', '', 'dev', 'otp', 'ab', 'cd', x'30', '2026-01-01 00:00:00')")
    assert store.migrate() == [8]
    with store._writer.connect() as conn:
        assert {"requested_subject", "requested_sans"} <= {
            c["name"] for c in inspect(conn).get_columns("certificates")}
    kept = store.certificate_status("default", "1a")
    assert (kept.subject, kept.requested_subject, kept.requested_sans) == ("CN=dev", None, None)
    assert kept.request_names() == ("CN=dev", "dev")
    assert store.schema_version() == 8
