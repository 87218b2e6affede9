import time

from devices.records import GpsFix, fixes_to_array
from ingest.batch import Batch, DeadLetter


def test_batch_is_due_by_rows_messages_or_age() -> None:
    b = Batch(max_rows=3, max_messages=100, max_ms=10_000)
    b.add_fixes("A", fixes_to_array([GpsFix(1, 1, 1), GpsFix(2, 1, 1)]), 5, token="t1")
    assert not b.due()
    b.add_fixes("B", fixes_to_array([GpsFix(3, 1, 1)]), 6, token="t2")
    assert b.due()
    drained = b.drain()
    assert drained.tokens == ["t1", "t2"] and drained.messages == 2
    assert drained.fixes.vehicles == ["A", "B"]
    assert drained.fixes.vehicle.tolist() == [0, 0, 1]
    assert drained.fixes.received_us.tolist() == [5, 5, 6]
    assert b.rows == 0 and b.messages == 0 and not b.due()

    b = Batch(max_rows=100, max_messages=2, max_ms=10_000)
    b.add_dead(DeadLetter(1, "t", b"x", "bad"), token="a")
    assert not b.due()
    b.add_fixes("A", fixes_to_array([]), 1, token="b")
    assert b.due()
    assert len(b.drain().fixes) == 0

    b = Batch(max_rows=100, max_messages=100, max_ms=1)
    b.add_dead(DeadLetter(1, "t", b"x", "bad"))
    time.sleep(0.005)
    assert b.due()
