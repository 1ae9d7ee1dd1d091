"""Storage: certificates, OTPs, lockouts and the audit trail (SQLAlchemy Core).

`Store` is synchronous and owns every SQL statement; `AsyncStore` runs it on
worker threads so that no database wait ever blocks the event loop.
"""

from kipuka.store.asyncstore import AsyncStore
from kipuka.store.certificates import CertFilter, StoredCRL
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord, PendingRecord
from kipuka.store.sql import SerialCollision, Store, StoreUnavailable

__all__ = ["AsyncStore", "AuditEvent", "CertFilter", "CertRecord", "OtpRecord", "PendingRecord", "StoredCRL", "SerialCollision", "Store", "StoreUnavailable"]
