"""Replica pool routing rules (kipuka.ca.pool), with replicas that answer as they are told.

The end-to-end failover tests (tests/test_hsm_replicas.py, tests/test_upstream_est.py,
tests/test_dogtag.py) use real back ends; these pin the routing decisions themselves.
"""

import asyncio

import pytest

from kipuka.ca.pool import ReplicaPool
from kipuka.errors import InternalError, Unavailable


class Replica:
    """A back end whose next answers are scripted: "ok", "busy", "unreachable" or "broken"."""

    def __init__(self, name: str, answers: list[str]) -> None:
        self.id, self.answers, self.calls = name, list(answers), 0

    def ca_certificates(self):  # the pool only forwards this
        return []

    async def issue(self, req):
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "busy":
            raise Unavailable(f"{self.id} busy", retry_after=3)
        if answer == "unreachable":
            raise Unavailable(f"{self.id} does not answer", retry_after=7, unreachable=True)
        if answer == "broken":
            raise InternalError(f"{self.id} token gone", retryable=True)
        return self.id

    async def health(self):
        return "ok"


def _run(pool: ReplicaPool, n: int) -> list[str]:
    async def go():
        return [await pool.issue(None) for _ in range(n)]
    return asyncio.run(go())


def test_a_busy_replica_stays_first_in_line():
    first, second = Replica("r1", ["busy"]), Replica("r2", [])
    pool = ReplicaPool("ca", [first, second], "active-passive", health_interval=3600)
    assert _run(pool, 2) == ["r2", "r1"]  # busy is not down: the next request tries r1 first again


def test_an_unreachable_replica_is_set_aside_until_its_health_check():
    first, second = Replica("r1", ["unreachable"]), Replica("r2", [])
    pool = ReplicaPool("ca", [first, second], "active-passive", health_interval=3600)
    assert _run(pool, 3) == ["r2", "r2", "r2"]
    assert first.calls == 1  # tried once, then last in line
    assert pool.summary().startswith("degraded")


def test_every_replica_failing_is_unavailable_with_the_shortest_retry_after():
    pool = ReplicaPool("ca", [Replica("r1", ["unreachable"]), Replica("r2", ["busy"])], "round-robin",
                       health_interval=3600, retry_after=30)
    with pytest.raises(Unavailable) as caught:
        _run(pool, 1)
    assert caught.value.retry_after == 3 and "r1 does not answer" in caught.value.reason


def test_a_retryable_internal_error_fails_over_and_marks_the_replica_down():
    first, second = Replica("r1", ["broken"]), Replica("r2", [])
    pool = ReplicaPool("ca", [first, second], "active-passive", health_interval=3600)
    assert _run(pool, 2) == ["r2", "r2"] and first.calls == 1
