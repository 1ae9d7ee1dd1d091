"""The tables, as SQLAlchemy Core metadata (portable across SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData, String, Table, Text,
    TypeDecorator, UniqueConstraint,
)

metadata = MetaData()


class UTCDateTime(TypeDecorator):
    """Stores UTC and hands back aware datetimes: SQLite drops the zone otherwise."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)

certificates = Table(
    "certificates", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ca_id", String(64), nullable=False),
    Column("serial", String(42), nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("label", String(64), nullable=False),
    Column("entity", String(255), nullable=False),
    Column("auth", String(16), nullable=False),
    Column("otp_id", BigInteger, nullable=True),
    Column("pubkey_sha256", String(64), nullable=False),
    Column("fingerprint_sha256", String(64), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    UniqueConstraint("ca_id", "serial", name="uq_certificates_ca_serial"),
    UniqueConstraint("fingerprint_sha256", name="uq_certificates_fingerprint"),
)
Index("ix_certificates_otp_key", certificates.c.otp_id, certificates.c.pubkey_sha256)
Index("ix_certificates_subject", certificates.c.subject)
Index("ix_certificates_entity", certificates.c.entity)
Index("ix_certificates_serial", certificates.c.serial)

otps = Table(
    "otps", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("entity", String(255), nullable=False),
    Column("label", String(64), nullable=True),
    Column("key_id", String(32), nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("uses_total", Integer, nullable=False),
    Column("uses_left", Integer, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)
Index("ix_otps_entity", otps.c.entity)

otp_failures = Table(
    "otp_failures", metadata,
    Column("entity", String(255), primary_key=True),
    Column("address", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=True),
)

audit = Table(
    "audit", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("label", String(64), nullable=False),
    Column("entity", String(255), nullable=False),
    Column("client_addr", String(64), nullable=False),
    Column("auth", String(16), nullable=False),
    Column("ca_id", String(64), nullable=False),
    Column("serial", String(42), nullable=False),
)
Index("ix_audit_at", audit.c.at)
