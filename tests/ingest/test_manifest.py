import copy
import time
from typing import Any

import pytest

from ingest.manifest import ManifestError, parse_manifest, statements, summary

GOOD: dict[str, Any] = {
    "stops": [
        {"stop_id": "HUB-1", "kind": "hub", "geofence": {"type": "Polygon", "coordinates": [
            [[13.40, 52.518], [13.404, 52.518], [13.404, 52.521], [13.40, 52.518]]]}},
        {"stop_id": "DOCK-3", "kind": "dock", "hub_stop_id": "HUB-1",
         "geofence": {"type": "Point", "coordinates": [13.4021, 52.519]}, "radius_m": 8},
        {"stop_id": "S-17", "kind": "delivery", "name": "12 Elm St",
         "geofence": {"type": "Point", "coordinates": [13.405, 52.52]}, "radius_m": 40},
        {"stop_id": "S-18", "kind": "delivery",
         "geofence": {"type": "Point", "coordinates": [13.41, 52.52]}, "radius_m": 30},
    ],
    "vehicles": [{"vehicle_id": "VAN-0042", "epc": "3154257BF4499602D2000000"}],
    "gates": [{"gate_id": "G-3", "dock_stop_id": "DOCK-3", "url": "/dev/ttyUSB0",
               "protocol": "mercury", "baud": 115200, "antennas": {"1": "hall", "2": "dock"}}],
    "parcels": [{"tracking_number": "MP100200300", "epc": "3074257BF7194E4000001A85",
                 "stop_id": "S-17", "promised_by": "2026-11-24T18:00:00Z"}],
    "routes": [{"vehicle_id": "VAN-0042", "hub_stop_id": "HUB-1", "stop_ids": ["S-17", "S-18"]}],
}


def problems_of(doc: Any, **kw: Any) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc, **kw)
    return info.value.problems


def test_a_good_manifest_parses_and_gives_statements() -> None:
    m = parse_manifest(GOOD)
    assert summary(m) == {"stops": 4, "vehicles": 1, "gates": 1, "parcels": 1, "routes": 1}
    sql = [s for s, _ in statements(m)]
    assert sum(s.startswith("INSERT INTO route_stop") for s in sql) == 2
    assert sql[-1] == "NOTIFY milepost_manifest"  # a running ingest reloads on commit
    assert all("%s" in s for s in sql[:-1])  # only parameters, never values in the text


def test_errors_name_the_row_and_the_field() -> None:
    doc = copy.deepcopy(GOOD)
    doc["parcels"].append({"tracking_number": "MP1", "stop_id": "S-17"})
    doc["parcels"].append({"tracking_number": "MP100200301", "stop_id": "S-99",
                           "promised_by": "2026-11-24T18:00:00"})
    doc["stops"][2]["geofence"]["coordinates"] = [200, 52.5]
    problems = problems_of(doc)
    assert any(p.startswith("parcels[1].tracking_number:") for p in problems), problems
    assert any(p.startswith("parcels[2].promised_by:") for p in problems), problems
    assert any(p.startswith("stops[2].geofence") and "WGS84" in p for p in problems), problems


def test_cross_references_and_duplicates() -> None:
    doc = copy.deepcopy(GOOD)
    doc["parcels"][0]["stop_id"] = "DOCK-3"
    doc["gates"][0]["dock_stop_id"] = "S-17"
    doc["routes"][0]["stop_ids"] = ["S-17", "S-404", "S-17"]
    doc["vehicles"].append({"vehicle_id": "VAN-0042"})
    doc["stops"][3]["radius_m"] = None
    problems = problems_of(doc)
    assert "parcels[0].stop_id: stop 'DOCK-3' is a dock, not a delivery" in problems
    assert "gates[0].dock_stop_id: stop 'S-17' is a delivery, not a dock" in problems
    assert "routes[0].stop_ids[1]: no stop 'S-404' in this manifest or stored" in problems
    assert "routes[0].stop_ids: ['S-17'] listed twice" in problems
    assert "vehicles[1]: duplicate id 'VAN-0042' (also vehicles[0])" in problems
    assert "stops[3].radius_m: a Point geofence needs radius_m" in problems


def test_references_resolve_against_what_is_stored() -> None:
    doc = {"parcels": [{"tracking_number": "MP100200302", "stop_id": "S-17"}],
           "routes": [{"vehicle_id": "VAN-1", "hub_stop_id": "HUB-1", "stop_ids": ["S-17"]}]}
    assert problems_of(doc) == [
        "parcels[0].stop_id: no stop 'S-17' in this manifest or stored",
        "routes[0].vehicle_id: no vehicle 'VAN-1' in this manifest or stored",
        "routes[0].hub_stop_id: no stop 'HUB-1' in this manifest or stored",
        "routes[0].stop_ids[0]: no stop 'S-17' in this manifest or stored",
    ]
    parse_manifest(doc, {"S-17": "delivery", "HUB-1": "hub"}, {"VAN-1"})


def test_invalid_polygon_and_unknown_fields() -> None:
    doc = copy.deepcopy(GOOD)
    doc["stops"][0]["geofence"]["coordinates"] = [
        [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]  # a bow tie
    doc["vehicles"][0]["colour"] = "red"
    problems = problems_of(doc)
    assert any(p.startswith("stops[0].geofence") and "not valid" in p for p in problems)
    assert any(p.startswith("vehicles[0].colour") for p in problems)
    assert problems_of(b"{not json")[0].startswith("not JSON")
    assert problems_of([]) == ["the manifest must be a JSON object"]


def test_a_long_route_is_checked_in_linear_time() -> None:
    # Found writing the fuzz harness: duplicates were found with list.count per stop, so
    # 20,000 stops took 8 s and 100,000 (a 1 MB PUT) minutes. Now well under a second.
    n = 100_000
    doc = copy.deepcopy(GOOD)
    doc["routes"][0]["stop_ids"] = ["S-17", "S-18"] * (n // 2)
    start = time.perf_counter()
    problems = problems_of(doc)
    assert time.perf_counter() - start < 5.0
    assert problems == ["routes[0].stop_ids: ['S-17', 'S-18'] listed twice"]
