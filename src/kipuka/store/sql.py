"""The Store: every SQL statement kipuka runs, behind domain methods, one module per concern."""

from __future__ import annotations

from kipuka.store.admin import AdminTokenStore
from kipuka.store.audit import AuditStore
from kipuka.store.brski import BrskiStore
from kipuka.store.browse import BrowseStore
from kipuka.store.base import Revoked, SerialCollision, StoreUnavailable
from kipuka.store.certificates import CertificateStore
from kipuka.store.cmc import CmcStore
from kipuka.store.enrollment import EnrollmentStore
from kipuka.store.escrow import EscrowStore
from kipuka.store.pending import PendingStore
from kipuka.store.stats import StatsStore


class Store(EscrowStore, EnrollmentStore, CertificateStore, PendingStore, AuditStore, AdminTokenStore,
            CmcStore, StatsStore, BrskiStore, BrowseStore):
    """All of kipuka's storage; SQLite or PostgreSQL through SQLAlchemy Core."""


__all__ = ["Revoked", "SerialCollision", "Store", "StoreUnavailable"]
