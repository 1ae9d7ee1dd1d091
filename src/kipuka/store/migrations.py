"""Versioned schema migrations: an ordered list of steps and a version row.

Hand-rolled rather than Alembic: kipuka migrates itself at start-up from a
wheel, with no script directory or env.py, and the steps are few.

A new database gets the current schema of schema.py in one step and is stamped
with the latest version. An older database runs every step above its version,
each in the same transaction as the version bump, so a failed step leaves it at
the previous version. Because the baseline creates the current schema, every
later step must be idempotent: it checks what exists before it adds.
"""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import Connection, inspect, select, text

from kipuka.store import schema

log = logging.getLogger("kipuka.store")


V6_INDEXES = {"ix_certificates_expires_id", "ix_certificates_replaces"}  # their columns come with v6


def _v2_operations(conn: Connection) -> None:
    """Pending approvals, CRL state, admin tokens, the audit hash chain, admin indexes."""
    schema.metadata.create_all(conn, tables=[schema.audit_chain, schema.pending_requests, schema.crl_state,
                                             schema.admin_tokens], checkfirst=True)
    columns = {c["name"] for c in inspect(conn).get_columns("audit")}
    for name, sql_type in (("chain_seq", "BIGINT"), ("prev_hash", "VARCHAR(64)"), ("hash", "VARCHAR(64)")):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE audit ADD COLUMN {name} {sql_type}"))
    indexes = {i["name"] for t in ("audit", "certificates") for i in inspect(conn).get_indexes(t)}
    for index in (*schema.audit.indexes, *schema.certificates.indexes):
        if index.name not in indexes and index.name not in V6_INDEXES:
            index.create(conn)


def _v3_keys_and_cmc(conn: Connection) -> None:
    """Escrowed server-generated keys, and CMC nonce/transaction replay protection."""
    schema.metadata.create_all(conn, tables=[schema.escrowed_keys, schema.cmc_replay], checkfirst=True)
    existing = {i["name"] for i in inspect(conn).get_indexes("pending_requests")}
    for index in schema.pending_requests.indexes:
        if index.name not in existing:
            index.create(conn)


def _v4_ca_ref(conn: Connection) -> None:
    """Pending requests held by a remote CA remember its request id."""
    if "ca_ref" not in {c["name"] for c in inspect(conn).get_columns("pending_requests")}:
        conn.execute(text("ALTER TABLE pending_requests ADD COLUMN ca_ref VARCHAR(200)"))


def _v5_audit_actor(conn: Connection) -> None:
    """audit.auth holds the acting admin ("token:NAME", "cert:SUBJECT"): VARCHAR(16) cut them off on
    PostgreSQL (the write failed). SQLite never enforced the length."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit ALTER COLUMN auth TYPE TEXT"))


def _v6_console(conn: Connection) -> None:
    """Renewal lineage (certificates.replaces_ca/replaces_serial) and the console's sort and lineage indexes."""
    columns = {c["name"] for c in inspect(conn).get_columns("certificates")}
    for name, sql_type in (("replaces_ca", "VARCHAR(64)"), ("replaces_serial", "VARCHAR(42)")):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE certificates ADD COLUMN {name} {sql_type}"))
    existing = {i["name"] for i in inspect(conn).get_indexes("certificates")}
    for index in schema.certificates.indexes:
        if index.name not in existing:
            index.create(conn)
    search_index(conn)


def search_index(conn: Connection) -> None:
    """PostgreSQL: a trigram index for the console's search in any case (serial, SAN or subject),
    which is otherwise a scan of every certificate. Skipped, with the scan left as it is, where
    the pg_trgm extension cannot be created (a managed database without the privilege)."""
    if conn.dialect.name != "postgresql":
        return
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            conn.execute(text("CREATE INDEX IF NOT EXISTS ix_certificates_search_trgm ON certificates "
                              "USING gin (lower(subject || ' ' || sans) gin_trgm_ops)"))
    except Exception as exc:  # noqa: BLE001 - any refusal leaves the search unindexed, not broken
        log.warning("no trigram index for certificate search (%s): searches scan the table",
                    str(exc).splitlines()[0][:200])


def _v7_brski(conn: Connection) -> None:
    """BRSKI: pledges (devices known by their IDevID), LDevID links, ownership rules (RFC 8995)."""
    schema.metadata.create_all(conn, tables=[schema.brski_pledges, schema.brski_ldevids, schema.brski_ownership],
                               checkfirst=True)


def _v8_requested_names(conn: Connection) -> None:
    """The names a request asked for, where a remote CA certified others (lost-response retries)."""
    columns = {c["name"] for c in inspect(conn).get_columns("certificates")}
    for name in ("requested_subject", "requested_sans"):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE certificates ADD COLUMN {name} TEXT"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "baseline: certificates, otps, otp_failures, audit", lambda conn: None),
    (2, "pending requests, CRLs, admin tokens, audit chain", _v2_operations),
    (3, "escrowed keys, CMC replay protection", _v3_keys_and_cmc),
    (4, "pending requests held by a remote CA", _v4_ca_ref),
    (5, "audit actor as long as an admin's name", _v5_audit_actor),
    (6, "renewal lineage and console indexes", _v6_console),
    (7, "BRSKI pledges, LDevID links and ownership rules", _v7_brski),
    (8, "the names a request asked for where the CA certified others", _v8_requested_names),
]
LATEST = MIGRATIONS[-1][0]
# Steps whose number was reserved by a branch that merged after a higher step shipped: a
# database may already be past their number without having run them (v7 shipped before v6).
# They are idempotent, and run whenever what they add is found missing.
LATE_STEPS = {6}


def _v6_missing(conn: Connection) -> bool:
    return "replaces_serial" not in {c["name"] for c in inspect(conn).get_columns("certificates")}


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(select(schema.schema_version.c.version)).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> list[int]:
    """Bring the database to LATEST; returns the versions applied."""
    version = current_version(conn)
    if version == 0:
        schema.metadata.create_all(conn)
        search_index(conn)
        conn.execute(schema.schema_version.insert().values(version=LATEST))
        return [LATEST]
    applied = []
    for number, _, step in MIGRATIONS:
        if number <= version:
            if number in LATE_STEPS and _v6_missing(conn):
                step(conn)
                applied.append(number)
            continue
        step(conn)
        conn.execute(schema.schema_version.update().values(version=number))
        applied.append(number)
    return applied
