"""What is aboard each van, from its cargo reader's inventories, debounced.

A UHF reader misses a tag now and then (an orientation, a body in the way). A tag that
is aboard is reported "removed" only after it is missing from ``MISSES_TO_REMOVE``
consecutive inventories; a tag is "added" the first time it is seen. Inventories are
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
    misses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CargoChange:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    aboard: tuple[str, ...]
    late: bool = False


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
        removed = set()
        for epc in van.aboard - seen:
            van.misses[epc] = van.misses.get(epc, 0) + 1
            if van.misses[epc] >= self._misses_to_remove:
                removed.add(epc)
        van.aboard -= removed
        for epc in removed:
            del van.misses[epc]
        return CargoChange(tuple(sorted(added)), tuple(sorted(removed)), tuple(sorted(van.aboard)))
