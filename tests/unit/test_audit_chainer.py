"""The audit chainer links optimistically: hashed outside the write lock, written only if the head
has not moved. Two chainers racing must still give one unbroken chain, each row linked once."""

from __future__ import annotations

from kipuka.store import AuditEvent, Store


def test_a_chainer_whose_head_moved_reads_again_and_the_chain_stays_whole(store):
    for i in range(30):
        store.add_audit(AuditEvent(event="enroll", outcome="success", serial=f"{i:02x}"))
    rival = Store(store.url)
    real = store._linked
    raced = []

    def linked_then_rival_goes_first(cur, seq, prev, limit):
        chained = real(cur, seq, prev, limit)
        if not raced:  # between this chainer's read and its write, another one links ten rows
            raced.append(rival.chain_audit(10))
        return chained

    store._linked = linked_then_rival_goes_first
    try:
        linked = store.chain_audit(1000)
    finally:
        rival.close()
    assert len(raced[0]) == 10
    assert [e.chain_seq for e in linked] == list(range(11, 31))  # read again after the rival's head
    check = store.verify_audit_chain()
    assert (check.ok, check.checked, check.unchained) == (True, 30, 0)


def test_rows_written_after_the_read_wait_for_the_next_link(store):
    for i in range(5):
        store.add_audit(AuditEvent(event="enroll", outcome="success", serial=f"a{i}"))
    real = store._linked

    def linked_then_a_row_arrives(cur, seq, prev, limit):
        chained = real(cur, seq, prev, limit)
        store.add_audit(AuditEvent(event="enroll", outcome="success", serial="late"))
        return chained

    store._linked = linked_then_a_row_arrives
    assert len(store.chain_audit(1000)) == 5
    store._linked = real
    assert [e.serial for e in store.chain_audit(1000)] == ["late"]
    check = store.verify_audit_chain()
    assert (check.ok, check.checked, check.unchained) == (True, 6, 0)
