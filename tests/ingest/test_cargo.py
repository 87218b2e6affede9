from ingest.cargo import CargoTracker


def test_added_at_once_removed_only_after_two_misses() -> None:
    t = CargoTracker()
    c = t.update("V", 1, {"A", "B", "C"})
    assert (c.added, c.removed) == (("A", "B", "C"), ())
    c = t.update("V", 2, {"A", "B"})  # C missed once: still aboard
    assert (c.added, c.removed, c.aboard) == ((), (), ("A", "B", "C"))
    c = t.update("V", 3, {"A", "B", "C"})  # it was there after all
    assert (c.added, c.removed) == ((), ())
    t.update("V", 4, {"A"})
    c = t.update("V", 5, {"A", "D"})  # B and C missed twice: removed; D added
    assert (c.added, c.removed, c.aboard) == (("D",), ("B", "C"), ("A", "D"))
    assert c.removed_since_us == (4, 4)  # stamped with the first inventory that missed them
    t.update("V", 6, {"D"})  # A missed once at 6 ...
    t.update("V", 7, {"A", "D"})  # ... back at 7: the count starts again
    t.update("V", 8, {"D"})
    c = t.update("V", 9, {"D"})
    assert (c.removed, c.removed_since_us) == (("A",), (8,))


def test_late_inventories_change_nothing_and_vans_are_separate() -> None:
    t = CargoTracker()
    t.update("V", 10, {"A"})
    c = t.update("V", 5, set())
    assert c.late and c.aboard == ("A",)
    assert t.update("W", 1, {"A"}).added == ("A",)
    t.seed("X", 100, {"Z"})
    assert t.update("X", 101, {"Z"}).added == ()
