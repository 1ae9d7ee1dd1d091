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
    # The certificate a renewal replaced (v6): "renewed from" / "superseded by" in the console.
    Column("replaces_ca", String(64), nullable=True),
    Column("replaces_serial", String(42), nullable=True),
    # The request's names where the CA certified others (v8): lost-response retries match on them.
    Column("requested_subject", Text, nullable=True),
    Column("requested_sans", Text, nullable=True),
    UniqueConstraint("ca_id", "serial", name="uq_certificates_ca_serial"),
    UniqueConstraint("fingerprint_sha256", name="uq_certificates_fingerprint"),
)
Index("ix_certificates_otp_key", certificates.c.otp_id, certificates.c.pubkey_sha256)
Index("ix_certificates_subject", certificates.c.subject)
Index("ix_certificates_entity", certificates.c.entity)
Index("ix_certificates_serial", certificates.c.serial)
Index("ix_certificates_revoked", certificates.c.ca_id, certificates.c.revoked_at)  # CRL builds (v2)
Index("ix_certificates_label_id", certificates.c.label, certificates.c.id)  # admin filters (v2)
# The console (v6): keyset pages sorted by expiry, and lineage lookups ("superseded by").
Index("ix_certificates_expires_id", certificates.c.not_after, certificates.c.id)
Index("ix_certificates_replaces", certificates.c.replaces_serial, certificates.c.replaces_ca)

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
    Column("auth", Text, nullable=False),  # who acted: "otp", "mtls", "token:NAME", "cert:SUBJECT" (TEXT since v5)
    Column("ca_id", String(64), nullable=False),
    Column("serial", String(42), nullable=False),
    # The hash chain (schema v2): rows get `chain_seq`, `prev_hash` and `hash`
    # after they are written, from one chainer at a time, so issuance never
    # waits on the chain.
    Column("chain_seq", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
)
Index("ix_audit_at", audit.c.at)
Index("ux_audit_chain_seq", audit.c.chain_seq, unique=True)

audit_chain = Table(
    "audit_chain", metadata,
    Column("id", Integer, primary_key=True),  # a single row, id = 1
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

pending_requests = Table(
    "pending_requests", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("op", String(16), nullable=False),
    Column("label", String(64), nullable=False),
    Column("ca_id", String(64), nullable=False),
    Column("requester", String(300), nullable=False),  # "otp:<entity>" or "cert:<sha256 of client cert>"
    Column("entity", String(255), nullable=False),
    Column("auth", String(16), nullable=False),
    Column("client_addr", String(64), nullable=False),
    Column("otp_id", BigInteger, nullable=True),
    Column("credential_ca", String(64), nullable=True),
    Column("credential_serial", String(42), nullable=True),
    Column("pubkey_sha256", String(64), nullable=False),
    Column("csr_der", LargeBinary, nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | issued | rejected | expired
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decided_by", String(255), nullable=True),
    Column("serial", String(42), nullable=True),
    # The CA back end's own handle when the CA holds the request (a Dogtag request id), v4.
    Column("ca_ref", String(200), nullable=True),
)
Index("ix_pending_requester", pending_requests.c.requester, pending_requests.c.pubkey_sha256)
Index("ix_pending_status", pending_requests.c.status, pending_requests.c.id)
# One open request per requester and key, even when two copies race on two nodes (v3).
Index("ux_pending_open", pending_requests.c.requester, pending_requests.c.pubkey_sha256, unique=True,
      sqlite_where=pending_requests.c.status == "pending", postgresql_where=pending_requests.c.status == "pending")

crl_state = Table(
    "crl_state", metadata,
    Column("ca_id", String(64), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("this_update", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

admin_tokens = Table(
    "admin_tokens", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)


# --- schema v3 ----------------------------------------------------------------------

escrowed_keys = Table(
    "escrowed_keys", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ca_id", String(64), nullable=False),
    Column("serial", String(42), nullable=False),
    Column("escrow_cert_sha256", String(64), nullable=False),  # which recovery key can open it
    Column("ciphertext", LargeBinary, nullable=False),  # CMS EnvelopedData to the escrow certificate
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("ca_id", "serial", name="uq_escrowed_keys_ca_serial"),
)

cmc_replay = Table(
    "cmc_replay", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "nonce" | "transaction"
    Column("value_sha256", String(64), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "value_sha256", name="uq_cmc_replay"),
)


# --- schema v7: BRSKI (RFC 8995) --------------------------------------------------------

brski_pledges = Table(
    "brski_pledges", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("idevid_sha256", String(64), nullable=False, unique=True),  # the device is its IDevID
    Column("manufacturer", String(64), nullable=False),
    Column("serial_number", String(128), nullable=False),
    Column("idevid_subject", Text, nullable=False),
    Column("idevid_der", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # owned | pending | approved | rejected
    Column("label", String(64), nullable=False),  # the EST label its LDevID comes from
    Column("reason", Text, nullable=False),
    Column("decided_by", String(255), nullable=True),  # "policy:<rule>" or the officer
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("client_addr", String(64), nullable=False),
    Column("masa_url", Text, nullable=False),
    Column("nonce", String(100), nullable=True),  # base64 of the last voucher request's nonce
    Column("voucher_at", UTCDateTime, nullable=True),  # when the last voucher was handed to the pledge
    Column("voucher", LargeBinary, nullable=True),  # that voucher, as the MASA signed it
    Column("voucher_status", Text, nullable=True),  # the pledge's last telemetry (RFC 8995 §5.7), as JSON
    Column("enroll_status", Text, nullable=True),  # (§5.9.4), as JSON
)
Index("ix_brski_pledges_status", brski_pledges.c.status, brski_pledges.c.id)

brski_ldevids = Table(
    "brski_ldevids", metadata,
    Column("ca_id", String(64), primary_key=True),
    Column("serial", String(42), primary_key=True),
    Column("pledge_id", BigInteger, nullable=False),
)
Index("ix_brski_ldevids_pledge", brski_ldevids.c.pledge_id)

brski_ownership = Table(
    "brski_ownership", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("manufacturer", String(64), nullable=False),
    Column("pattern", String(128), nullable=False),  # serial-number pattern (fnmatch)
    Column("label", String(64), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("manufacturer", "pattern", name="uq_brski_ownership"),
)
