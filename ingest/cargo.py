"""What is aboard each van, from its cargo reader's inventories, debounced.

A UHF reader misses a tag now and then (an orientation, a body in the way). A tag that
is aboard is reported "removed" only after it is missing from ``MISSES_TO_REMOVE``
consecutive inventories, and stamped with the first of them (when it was first missed:
at a stop, the moment the parcel was taken out); a tag is "added" the first time it is
seen. Inventories are
taken in event-time order per van; an inventory older than the newest one seen is
stored but changes nothing (it is late news).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MISSES_TO_REMOVE = 2


@dataclass(slots=True)
class _Van:
    last_us: int = -1
    aboard: set[str] = field(default_factory=set)
    misses: dict[str, tuple[int, int]] = field(default_factory=dict)  # epc -> (count, first_us)


@dataclass(frozen=True, slots=True)
class CargoChange:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    aboard: tuple[str, ...]
    late: bool = False
    removed_since_us: tuple[int, ...] = ()  # per removed tag: the first inventory that missed it


class CargoTracker:
    def __init__(self, misses_to_remove: int = MISSES_TO_REMOVE) -> None:
        self._misses_to_remove = misses_to_remove
        self._vans: dict[str, _Van] = {}

    def known(self, vehicle_id: str) -> bool:
        return vehicle_id in self._vans

    def seed(self, vehicle_id: str, ts_us: int, aboard: set[str]) -> None:
        """Start from what was stored before a restart."""
        self._vans[vehicle_id] = _Van(ts_us, set(aboard))

    def update(self, vehicle_id: str, ts_us: int, seen: set[str]) -> CargoChange:
        van = self._vans.setdefault(vehicle_id, _Van())
        if ts_us <= van.last_us:
            return CargoChange((), (), tuple(sorted(van.aboard)), late=True)
        van.last_us = ts_us
        added = seen - van.aboard
        van.aboard |= seen
        for epc in seen:
            van.misses.pop(epc, None)
        removed: dict[str, int] = {}
        for epc in van.aboard - seen:
            count, first = van.misses.get(epc, (0, ts_us))
            van.misses[epc] = (count + 1, first)
            if count + 1 >= self._misses_to_remove:
                removed[epc] = first
        van.aboard -= removed.keys()
        for epc in removed:
            del van.misses[epc]
        gone = tuple(sorted(removed))
        return CargoChange(tuple(sorted(added)), gone, tuple(sorted(van.aboard)),
                           removed_since_us=tuple(removed[e] for e in gone))
