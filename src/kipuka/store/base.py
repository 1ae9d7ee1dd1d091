"""Engines, transactions and the error mapping every store module shares.

Each write method is one transaction. On SQLite, writes start with BEGIN
IMMEDIATE so that two worker processes serialise on the database lock (waited
for in a store thread, never on the event loop) instead of failing on upgrade.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import threading
import time
from typing import Any

from sqlalchemy import Engine, and_, bindparam, create_engine, event, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool

from kipuka.store import migrations, schema
from kipuka.store.issuance_sql import Dialect, Statements
from kipuka.store.records import AuditEvent, CertRecord


# Statements on the issuance path are built once: building them per call cost more
# CPU than the database work itself (docs/benchmarks.md).
_INSERT_AUDIT = schema.audit.insert()
_INSERT_CERT = schema.certificates.insert()
_REVOKED = select(schema.certificates.c.revoked_at).where(and_(
    schema.certificates.c.ca_id == bindparam("ca_id"), schema.certificates.c.serial == bindparam("serial")))
_CERT_FIELDS = tuple(f.name for f in dataclasses.fields(CertRecord))


class SerialCollision(Exception):
    """The CA picked a serial it already used: re-sign with a new one."""


class StoreUnavailable(Exception):
    """The database cannot be reached or answered with an error."""


class Revoked(Exception):
    """The credential certificate named in a write has been revoked."""


CONNECT_TIMEOUT = 3  # seconds: a node that cannot reach the database answers 500 quickly
STATEMENT_TIMEOUT_MS = 15000
OUTAGE_BACKOFF = 1.0  # after a failure, fail fast for this long before trying the database again


def engine_url(url: str) -> str:
    """postgresql:// URLs use psycopg 3 (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class SqliteWriteLock:
    """One writer at a time across processes, handed over by the kernel.

    Without it, a worker waiting for SQLite's write lock sleeps in SQLite's
    busy handler (1 to 100 ms polls) and the p99 grows to seconds at two
    workers; with flock the waiter wakes as soon as the lock is released. The
    file is opened lazily so that each forked worker has its own descriptor;
    a crashed holder releases it with its descriptor.
    """

    def __init__(self, db_path: str) -> None:
        self.path = db_path + "-writelock"
        self._fd: int | None = None
        self._pid = 0
        self._thread = threading.Lock()

    def acquire(self) -> None:
        self._thread.acquire()
        try:
            if self._fd is None or self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


def _sqlite_path(url: str) -> str | None:
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    return path if path and path != ":memory:" else None


def _create_private(path: str) -> None:
    """Create a new SQLite file mode 0600 before SQLite does (it would follow the umask): it holds
    OTP hashes, the audit trail and escrowed keys. SQLite gives its -wal and -shm files the
    database file's mode. An existing file keeps the mode its operator chose."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # a directory we cannot write: SQLite reports it, with its own words, on first use


def _make_engine(url: str, immediate: bool) -> Engine:
    url = engine_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=5,
                             connect_args={"connect_timeout": CONNECT_TIMEOUT,
                                           "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})
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
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._writer = _make_engine(url, immediate=True)
        self._reader = self._writer if self.dialect != "sqlite" else _make_engine(url, immediate=False)
        self._down_until = 0.0
        path = _sqlite_path(url) if self.dialect == "sqlite" else None
        if path:
            _create_private(path)
        self._write_lock = SqliteWriteLock(path) if path else None
        self.sql = Statements.of(Dialect(self.dialect))  # the enrollment path's statements, on the driver

    def checkpoint(self) -> None:
        """Fold SQLite's WAL into the database, off the request path (PASSIVE: never waits for readers)."""
        if self.dialect == "sqlite":
            with self._reader.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def defer_checkpoints(self) -> None:
        """Writers stop checkpointing inside their commits; a background job calls checkpoint().

        A checkpoint's fsync inside a commit stalls every request waiting on that
        writer. Only long-running servers turn this on (the CLI keeps SQLite's default).
        """
        if self.dialect == "sqlite":
            event.listen(self._writer, "connect",
                         lambda dbapi_conn, _rec: dbapi_conn.execute("PRAGMA wal_autocheckpoint=0"))

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
        return _guard(self, self._writer, self._write_lock)

    def _read(self) -> Any:
        return _guard(self, self._reader)

    @staticmethod
    def _raw(conn: Any, fn: Any) -> Any:
        """Run `fn` on a DB-API cursor of a SQLAlchemy connection (inside its transaction)."""
        cur = conn.connection.driver_connection.cursor()
        try:
            return fn(cur)
        except Exception as exc:
            raise driver_error(exc) from exc
        finally:
            cur.close()

    @staticmethod
    def _audit(conn: Any, e: AuditEvent) -> None:
        conn.execute(_INSERT_AUDIT, e.row())

    @staticmethod
    def _insert_ignore(conn: Any, table: Any, values: dict[str, Any], keys: list[str]) -> None:
        """INSERT ... ON CONFLICT DO NOTHING: creates a row once, whoever gets there first."""
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=keys))

    @staticmethod
    def _locked(conn: Any, query: Any) -> Any:
        """SELECT ... FOR UPDATE where the database has it (SQLite's BEGIN IMMEDIATE already locks)."""
        return query.with_for_update() if conn.dialect.name == "postgresql" else query

    @staticmethod
    def _revoked(conn: Any, ca_id: str, serial: str) -> bool:
        row = conn.execute(_REVOKED, {"ca_id": ca_id, "serial": serial}).first()
        return row is not None and row[0] is not None

    @staticmethod
    def _insert_cert(conn: Any, cert: CertRecord) -> None:
        try:
            conn.execute(_INSERT_CERT, {name: getattr(cert, name) for name in _CERT_FIELDS})
        except IntegrityError as exc:  # the enclosing transaction rolls back with it
            raise SerialCollision(cert.serial) from exc


class _guard:
    """A transaction that turns driver failures into StoreUnavailable.

    After a connection-level failure the store fails fast for OUTAGE_BACKOFF
    seconds instead of making every request wait for a connect timeout; the
    first request after that tries the database again, so a node recovers by
    itself when the database comes back.
    """

    def __init__(self, store: "StoreBase", engine: Engine, lock: SqliteWriteLock | None = None) -> None:
        self._store = store
        self._engine = engine
        self._lock = lock
        self._ctx: Any = None

    def __enter__(self) -> Any:
        if time.monotonic() < self._store._down_until:
            raise StoreUnavailable("database unavailable")
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._ctx = self._engine.begin()
            return self._ctx.__enter__()
        except (OperationalError, DBAPIError) as exc:
            self._unlock()
            self._outage(exc)
            raise StoreUnavailable(_short(exc)) from exc
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            result = self._ctx.__exit__(*exc_info)
        except (OperationalError, DBAPIError) as exc:
            self._outage(exc)
            raise StoreUnavailable(_short(exc)) from exc
        finally:
            self._unlock()
        if exc_info[0] is not None and issubclass(exc_info[0], (OperationalError, DBAPIError)) \
                and not issubclass(exc_info[0], IntegrityError):
            self._outage(exc_info[1])
            raise StoreUnavailable(_short(exc_info[1])) from exc_info[1]
        return result

    def _outage(self, exc: BaseException) -> None:
        if getattr(exc, "connection_invalidated", False) or isinstance(exc, OperationalError):
            if self._store.dialect != "sqlite":  # SQLite "errors" are locks and files, not outages
                self._store._down_until = time.monotonic() + OUTAGE_BACKOFF


def driver_error(exc: Exception) -> Exception:
    """A DB-API driver's exception (sqlite3, psycopg) in the store's own terms."""
    if isinstance(exc, (StoreUnavailable, SerialCollision, Revoked)):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "IntegrityError" in names:  # a duplicate serial or fingerprint
        return SerialCollision(str(exc))
    if "Error" in names and type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg"):
        return StoreUnavailable(_short(exc))
    return exc


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:200]


def _cert(row: Any) -> CertRecord:
    values = dict(row)
    values.pop("id", None)
    values["der"] = bytes(values["der"])
    return CertRecord(**values)

