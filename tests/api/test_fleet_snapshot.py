"""When the shared fleet list (GET /v1/vehicles) is rebuilt: api.routes.vehicles.FleetSnapshot."""

from __future__ import annotations

from api.live import LiveHub
from api.routes.vehicles import FleetSnapshot


def built(at: float, version: int) -> FleetSnapshot:
    s = FleetSnapshot()
    s._built, s._version = at, version
    return s


def listening(version: int, connected: bool = True) -> LiveHub:
    hub = LiveHub("postgresql://never-connected.invalid/x")
    hub.connected, hub.positions_version = connected, version
    return hub


def test_never_built_is_not_fresh() -> None:
    assert not FleetSnapshot()._fresh(listening(0), now=0.0)


def test_no_new_position_keeps_it_until_max_age() -> None:
    s, hub = built(100.0, 7), listening(7)
    assert s._fresh(hub, 100.0 + FleetSnapshot.MAX_AGE_S - 0.01)
    assert not s._fresh(hub, 100.0 + FleetSnapshot.MAX_AGE_S)


def test_a_new_position_rebuilds_it_after_the_min_interval() -> None:
    s, hub = built(100.0, 7), listening(8)
    assert s._fresh(hub, 100.0 + FleetSnapshot.MIN_INTERVAL_S - 0.01)
    assert not s._fresh(hub, 100.0 + FleetSnapshot.MIN_INTERVAL_S)


def test_not_listening_rebuilds_it_after_the_min_interval() -> None:
    s, hub = built(100.0, 7), listening(7, connected=False)
    assert s._fresh(hub, 100.0 + FleetSnapshot.MIN_INTERVAL_S - 0.01)
    assert not s._fresh(hub, 100.0 + FleetSnapshot.MIN_INTERVAL_S)


def test_the_hub_counts_notifications_with_positions() -> None:
    hub = LiveHub("postgresql://never-connected.invalid/x")
    hub.receive('{"parcels": [["e1", "MP1", 1790000000000000, "InTransit", null, null, null]]}')
    assert hub.positions_version == 0
    hub.receive('{"positions": [["VAN-1", 1790000000000000, 13.4, 52.5, 3.0, null],'
                ' ["VAN-2", 1790000000000000, 13.4, 52.5, null, null]]}')
    assert hub.positions_version > 0
    version = hub.positions_version
    hub.receive("not json")  # logged, not counted, not raised
    assert hub.positions_version == version
