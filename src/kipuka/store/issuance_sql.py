"""The statements of the enrollment path, run on the database driver directly.

Every enrollment reads an entity's OTPs and its lockout, then spends an OTP use
and inserts a certificate and an audit row. Through SQLAlchemy each of those
statements cost more CPU than the database work itself (a py-spy profile of the
OTP path spent 45% of a worker in SQLAlchemy, docs/benchmarks.md), so these few
are plain SQL text on the DB-API cursor, for SQLite (sqlite3) and PostgreSQL
(psycopg 3). Everything else stays on SQLAlchemy Core.

Values are bound exactly as SQLAlchemy binds them (tests/unit/test_issuance_sql.py
reads rows written here back through SQLAlchemy, and the reverse): on SQLite a
UTC datetime is the text "YYYY-MM-DD HH:MM:SS.ffffff", on PostgreSQL a
timestamptz.

Each unit runs inside a transaction the caller owns (group commit puts many in
one) and reports expected outcomes as values, never as exceptions: an exception
means the transaction is no longer usable.

On PostgreSQL every statement is a round trip to another process, and each cost
the worker about 75 µs of psycopg's Python besides: the common case of each
write (an OTP use spent with its certificate and audit row; a certificate and
its audit row after the credential check) is one statement of data-modifying
CTEs there, and an OTP check's read is one statement on both databases. The
statement-by-statement path stays for what the common case does not cover (a
retried request, a spent OTP) and for SQLite, where a statement is a function
call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from kipuka.store import schema
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord

_CERT_COLUMNS = tuple(f.name for f in dataclasses.fields(CertRecord))
_AUDIT_COLUMNS = ("event", "outcome", "reason", "label", "entity", "client_addr", "auth", "ca_id", "serial", "at")
_OTP_COLUMNS = ("id", "entity", "label", "key_id", "digest", "expires_at", "uses_total", "uses_left", "revoked_at",
                "created_at")
_OTP_TIMES = {"expires_at", "revoked_at", "created_at"}


class Dialect:
    """Binds and reads values, and writes parameters, the way one driver wants them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sqlite = name == "sqlite"

    def sql(self, text: str) -> str:
        """`:name` parameters (sqlite3's named style) as psycopg's `%(name)s` where needed."""
        return text if self.sqlite else re.sub(r":([a-z_][a-z0-9_]*)", r"%(\1)s", text)

    def time(self, value: dt.datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        # SQLAlchemy's SQLite text form, "YYYY-MM-DD HH:MM:SS.ffffff"; isoformat is C, strftime is not
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")

    def read_time(self, value: Any) -> dt.datetime | None:
        if value is None or isinstance(value, dt.datetime):
            return value.astimezone(dt.timezone.utc) if value is not None else None
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)  # C speed; strptime is not


@dataclasses.dataclass(frozen=True)
class Statements:
    """The SQL of one dialect, written once."""

    dialect: Dialect
    insert_cert: str
    insert_audit: str
    spend_otp: str
    recovered: str
    revoked: str
    candidates: str
    entity: str
    issue_once: str | None  # PostgreSQL: spend, certificate and audit row in one statement
    record_once: str | None  # PostgreSQL: credential check, certificate and audit row in one statement

    @classmethod
    def of(cls, dialect: Dialect) -> "Statements":
        q = dialect.sql
        return cls(
            dialect=dialect,
            insert_cert=q(f"INSERT INTO certificates ({', '.join(_CERT_COLUMNS)}) "
                          f"VALUES ({', '.join(':' + c for c in _CERT_COLUMNS)})"),
            insert_audit=q(f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
                           f"VALUES ({', '.join(':' + c for c in _AUDIT_COLUMNS)})"),
            spend_otp=q("UPDATE otps SET uses_left = uses_left - 1 WHERE id = :id AND uses_left > 0 "
                        "AND revoked_at IS NULL AND expires_at > :now"),
            recovered=q("SELECT der, subject, sans, requested_subject, requested_sans FROM certificates "
                        "WHERE otp_id = :otp_id AND pubkey_sha256 = :pubkey AND issued_at >= :since "
                        "ORDER BY id DESC LIMIT 1"),
            revoked=q("SELECT revoked_at FROM certificates WHERE ca_id = :ca_id AND serial = :serial"),
            # The lockout and the OTPs in one read: the anchor row makes the lockout come back
            # even for an entity without OTPs.
            candidates=q(f"SELECT l.locked_until, {', '.join('o.' + c for c in _OTP_COLUMNS)} "
                         "FROM (SELECT 1 AS one) AS anchor "
                         "LEFT JOIN otp_failures l ON l.entity = :entity AND l.address = :address "
                         f"LEFT JOIN (SELECT {', '.join(_OTP_COLUMNS)} FROM otps WHERE entity = :entity "
                         "AND revoked_at IS NULL ORDER BY id DESC LIMIT 64) o ON 1 = 1 ORDER BY o.id DESC"),
            entity=q("SELECT entity FROM certificates WHERE ca_id = :ca_id AND serial = :serial"),
            issue_once=None if dialect.sqlite else q(
                "WITH earlier AS (SELECT 1 FROM certificates WHERE otp_id = :otp_id AND pubkey_sha256 = :pubkey "
                "AND issued_at >= :since), "
                "spent AS (UPDATE otps SET uses_left = uses_left - 1 WHERE id = :otp_id AND uses_left > 0 "
                "AND revoked_at IS NULL AND expires_at > :now AND NOT EXISTS (SELECT 1 FROM earlier) RETURNING id), "
                f"cert AS ({_insert_from(schema.certificates, _CERT_COLUMNS, 'c_', 'spent')}), "
                f"logged AS ({_insert_from(schema.audit, _AUDIT_COLUMNS, 'a_', 'spent')}) "
                "SELECT count(*) FROM spent"),
            record_once=None if dialect.sqlite else q(
                "WITH ok AS (SELECT 1 AS one WHERE NOT EXISTS (SELECT 1 FROM certificates WHERE ca_id = :cred_ca "
                "AND serial = :cred_serial AND revoked_at IS NOT NULL)), "
                f"cert AS ({_insert_from(schema.certificates, _CERT_COLUMNS, 'c_', 'ok')}), "
                f"logged AS ({_insert_from(schema.audit, _AUDIT_COLUMNS, 'a_', 'ok')}) "
                "SELECT count(*) FROM ok"),
        )

    # --- writes (inside the caller's transaction) ------------------------------------

    def audit(self, cur: Any, e: AuditEvent) -> None:
        row = e.row()
        row["at"] = self.dialect.time(e.at)
        cur.execute(self.insert_audit, row)

    def certificate(self, cur: Any, cert: CertRecord) -> None:
        """Insert a certificate; a duplicate serial or fingerprint raises the driver's IntegrityError."""
        cur.execute(self.insert_cert, self._cert_row(cert))

    def _cert_row(self, cert: CertRecord, prefix: str = "") -> dict[str, Any]:
        t = self.dialect.time
        row = {name: getattr(cert, name) for name in _CERT_COLUMNS}
        for name in ("not_before", "not_after", "issued_at", "revoked_at"):
            row[name] = t(row[name])
        return {prefix + name: value for name, value in row.items()} if prefix else row

    def _once_params(self, cert: CertRecord, audit: AuditEvent, **more: Any) -> dict[str, Any]:
        params = self._cert_row(cert, "c_")
        params.update({"a_" + name: value for name, value in audit.row().items()})
        params.update(more)
        return params

    def issue_with_otp(self, cur: Any, otp_id: int, cert: CertRecord, audit: AuditEvent, now: dt.datetime,
                       recovery_window: dt.timedelta) -> tuple[str, bytes | None]:
        """Spend one use of the OTP and record its certificate: ("issued", None); ("recovered", der)
        when the OTP already gave this public key a certificate for the same names within the
        window; ("spent", None) when no use is left, ("different", None) when no use is left and the
        OTP's certificate for this key within the window names something else (not a retry)."""
        if self.issue_once is not None:
            cur.execute(self.issue_once, self._once_params(cert, audit, otp_id=otp_id, pubkey=cert.pubkey_sha256,
                                                           since=now - recovery_window, now=now))
            if cur.fetchone()[0] == 1:
                return "issued", None
            # Not the common case (a retried request, or no use left): step by step says which.
        earlier, other = self.recovered_der(cur, otp_id, cert.pubkey_sha256, now - recovery_window,
                                            *cert.request_names())
        if earlier is not None:
            self.audit(cur, dataclasses.replace(audit, event=audit.event + ".redeliver",
                                                reason="certificate re-sent for a retried request"))
            return "recovered", earlier
        cur.execute(self.spend_otp, {"id": otp_id, "now": self.dialect.time(now)})
        if cur.rowcount != 1:
            return ("different" if other else "spent"), None
        self.certificate(cur, cert)
        self.audit(cur, audit)
        return "issued", None

    def record_issuance(self, cur: Any, cert: CertRecord, audit: AuditEvent,
                        credential: tuple[str, str] | None) -> str:
        """Record a certificate unless the client certificate it was asked with is revoked:
        "issued" or "revoked". Checked inside the write, so a revocation that lands while
        the certificate is being signed still wins."""
        if self.record_once is not None:
            ca_id, serial = credential if credential is not None else (None, None)
            cur.execute(self.record_once, self._once_params(cert, audit, cred_ca=ca_id, cred_serial=serial))
            return "issued" if cur.fetchone()[0] == 1 else "revoked"
        if credential is not None and self.is_revoked(cur, *credential):
            return "revoked"
        self.certificate(cur, cert)
        self.audit(cur, audit)
        return "issued"

    # --- reads ------------------------------------------------------------------------

    def recovered_der(self, cur: Any, otp_id: int, pubkey: str, since: dt.datetime, subject: str,
                      sans: str) -> tuple[bytes | None, bool]:
        """The certificate this OTP gave this key since `since` if it names `subject` and `sans`
        (a lost response, retried); else None, and whether one naming something else exists.
        The names are compared as the certificate record stores them (RFC 4514 subject, SAN list),
        with the names the request asked for where the CA certified others."""
        cur.execute(self.recovered, {"otp_id": otp_id, "pubkey": pubkey, "since": self.dialect.time(since)})
        row = cur.fetchone()
        if row is None:
            return None, False
        asked = (row[1], row[2]) if row[3] is None else (row[3], row[4] or "")
        if asked == (subject, sans):
            return bytes(row[0]), False
        return None, True

    def is_revoked(self, cur: Any, ca_id: str, serial: str) -> bool:
        cur.execute(self.revoked, {"ca_id": ca_id, "serial": serial})
        row = cur.fetchone()
        return row is not None and row[0] is not None

    def certificate_entity(self, cur: Any, ca_id: str, serial: str) -> str | None:
        """The entity a certificate was issued to (a renewal keeps it), or None when not on record."""
        cur.execute(self.entity, {"ca_id": ca_id, "serial": serial})
        row = cur.fetchone()
        return row[0] if row is not None else None

    def otp_candidates(self, cur: Any, entity: str, address: str) -> tuple[list[OtpRecord], dt.datetime | None]:
        """An entity's unrevoked OTPs (newest first, spent ones too) and its lockout for this address."""
        cur.execute(self.candidates, {"entity": entity, "address": address})
        return self.parse_candidates(cur.fetchall())

    def parse_candidates(self, rows: list[tuple]) -> tuple[list[OtpRecord], dt.datetime | None]:
        """The rows of `candidates` (read on any cursor, blocking or async) as records."""
        read_time = self.dialect.read_time
        locked = read_time(rows[0][0]) if rows else None
        otps = []
        for values in rows:
            if values[1] is None:  # the anchor row of an entity without OTPs
                continue
            fields = dict(zip(_OTP_COLUMNS, values[1:]))
            for name in _OTP_TIMES:
                fields[name] = read_time(fields[name])
            fields["digest"] = bytes(fields["digest"])
            otps.append(OtpRecord(**fields))
        return otps, locked


def _insert_from(table: Any, columns: tuple[str, ...], prefix: str, source: str) -> str:
    """INSERT ... SELECT of bound values, one row per row of `source` (PostgreSQL only).

    Each value is cast to its column's type: in a SELECT list PostgreSQL would take an
    untyped parameter (a None, a str) as text, which no timestamptz or bigint column takes.
    Strings are cast to TEXT, not VARCHAR(n): an explicit cast to VARCHAR(n) truncates
    silently, where the assignment to the column refuses a value too long, as an INSERT
    ... VALUES does.
    """
    from sqlalchemy import String
    from sqlalchemy.dialects import postgresql  # only PostgreSQL deployments build these

    dialect = postgresql.dialect()

    def sql_type(column: str) -> str:
        kind = table.c[column].type
        return "TEXT" if isinstance(kind, String) else kind.compile(dialect=dialect)

    values = ", ".join(f"CAST(:{prefix}{c} AS {sql_type(c)})" for c in columns)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {values} FROM {source}"
