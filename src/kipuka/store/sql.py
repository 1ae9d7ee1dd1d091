"""The Store: every SQL statement kipuka runs, behind domain methods, one module per concern."""

from __future__ import annotations

from kipuka.store.admin import AdminTokenStore
from kipuka.store.audit import AuditStore
from kipuka.store.base import Revoked, SerialCollision, StoreUnavailable
from kipuka.store.certificates import CertificateStore
from kipuka.store.enrollment import EnrollmentStore
from kipuka.store.pending import PendingStore


class Store(EnrollmentStore, CertificateStore, PendingStore, AuditStore, AdminTokenStore):
    """All of kipuka's storage; SQLite or PostgreSQL through SQLAlchemy Core."""


__all__ = ["Revoked", "SerialCollision", "Store", "StoreUnavailable"]
