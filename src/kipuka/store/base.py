"""Engines, transactions and the error mapping every store module shares.

Each write method is one transaction. On SQLite, writes start with BEGIN
IMMEDIATE so that two worker processes serialise on the database lock (waited
for in a store thread, never on the event loop) instead of failing on upgrade.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from kipuka.store import migrations, schema
from kipuka.store.records import AuditEvent, CertRecord


class SerialCollision(Exception):
    """The CA picked a serial it already used: re-sign with a new one."""


class StoreUnavailable(Exception):
    """The database cannot be reached or answered with an error."""


class Revoked(Exception):
    """The credential certificate named in a write has been revoked."""


def _make_engine(url: str, immediate: bool) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, poolclass=NullPool if ":memory:" in url else None,
                           connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class StoreBase:
    def __init__(self, url: str) -> None:
        self.url = url
        self._writer = _make_engine(url, immediate=True)
        self._reader = self._writer if not url.startswith("sqlite") else _make_engine(url, immediate=False)

    # --- lifecycle ------------------------------------------------------------------

    def migrate(self) -> list[int]:
        with self._tx() as conn:
            return migrations.migrate(conn)

    def schema_version(self) -> int:
        with self._read() as conn:
            return migrations.current_version(conn)

    def close(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # --- plumbing -------------------------------------------------------------------

    def _tx(self) -> Any:
        return _guard(self._writer.begin())

    def _read(self) -> Any:
        return _guard(self._reader.begin())



    @staticmethod
    def _audit(conn: Any, e: AuditEvent) -> None:
        conn.execute(schema.audit.insert().values(**e.row()))

    @staticmethod
    def _revoked(conn: Any, ca_id: str, serial: str) -> bool:
        c = schema.certificates
        row = conn.execute(select(c.c.revoked_at).where(and_(c.c.ca_id == ca_id, c.c.serial == serial))).first()
        return row is not None and row[0] is not None

    @staticmethod
    def _insert_cert(conn: Any, cert: CertRecord) -> None:
        try:
            conn.execute(schema.certificates.insert().values(**dataclasses.asdict(cert)))
        except IntegrityError as exc:  # the enclosing transaction rolls back with it
            raise SerialCollision(cert.serial) from exc


class _guard:
    """A transaction context that turns driver failures into StoreUnavailable."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __enter__(self) -> Any:
        try:
            return self._ctx.__enter__()
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from exc

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            result = self._ctx.__exit__(*exc_info)
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from exc
        if exc_info[0] is not None and issubclass(exc_info[0], (OperationalError, DBAPIError)) \
                and not issubclass(exc_info[0], IntegrityError):
            raise StoreUnavailable(_short(exc_info[1])) from exc_info[1]
        return result


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:200]


def _cert(row: Any) -> CertRecord:
    values = dict(row)
    values.pop("id", None)
    values["der"] = bytes(values["der"])
    return CertRecord(**values)

