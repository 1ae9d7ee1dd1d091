"""The RA's side of the audit trail: one event per decision, and refusals that are
audited before they are raised (so the front end does not audit them twice)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, NoReturn, TypeVar

from kipuka.errors import BadRequest, Forbidden, InternalError
from kipuka.ra.requester import Requester
from kipuka.ra.runtime import LabelRuntime
from kipuka.store import AsyncStore, AuditEvent, StoreUnavailable

T = TypeVar("T")


def auth_of(who: Requester) -> str:
    """How the requester authenticated, as the audit trail names it."""
    return "otp" if who.basic is not None else ("mtls" if who.client_cert is not None else "none")


async def stored(awaitable: Awaitable[T]) -> T:
    """A store call on the request path: a database failure is the client's 500, with its reason."""
    try:
        return await awaitable
    except StoreUnavailable as exc:
        raise InternalError(f"database error: {exc}") from None


class Trail:
    def __init__(self, store: AsyncStore) -> None:
        self.store = store

    @staticmethod
    def event(rt: LabelRuntime, op: str, outcome: str, who: Requester, entity: str, reason: str,
              auth: str = "", serial: str = "") -> AuditEvent:
        return AuditEvent(event=op, outcome=outcome, reason=reason, label=rt.label.name, entity=entity,
                          client_addr=who.client_addr, auth=auth or auth_of(who), ca_id=rt.ca.id, serial=serial)

    async def reject(self, rt: LabelRuntime, op: str, who: Requester, entity: str, exc: Exception) -> NoReturn:
        """Audit the refusal, mark it audited, raise it."""
        await self.rejection(rt.label.name, rt.ca.id, op, who, entity, getattr(exc, "reason", str(exc)))
        exc.audited = True  # type: ignore[attr-defined]
        raise exc

    async def guard(self, rt: LabelRuntime, op: str, who: Requester, entity: str, fn: Callable[[], T]) -> T:
        """Run a check; a BadRequest or Forbidden it raises is audited, then re-raised."""
        try:
            return fn()
        except (BadRequest, Forbidden) as exc:
            await self.reject(rt, op, who, entity, exc)

    async def rejection(self, label: str, ca_id: str, op: str, who: Requester, entity: str, reason: str) -> None:
        try:
            await self.store.add_audit(AuditEvent(event=op, outcome="rejected", reason=reason, label=label,
                                                  entity=entity, client_addr=who.client_addr, auth=auth_of(who),
                                                  ca_id=ca_id))
        except StoreUnavailable:
            pass  # the rejection stands; the store error is reported by the request that needs it

    async def success(self, rt: LabelRuntime, op: str, who: Requester, entity: str, reason: str,
                      **fields: Any) -> None:
        await stored(self.store.add_audit(self.event(rt, op, "success", who, entity, reason, **fields)))
