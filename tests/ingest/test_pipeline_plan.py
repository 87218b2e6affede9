"""A parcel whose tag a van's cargo reader saw before the parcel was in the plan (a
manifest stored just before the van's first inventory) is bound by the next inventory."""

from __future__ import annotations

from typing import Any

from devices.fleet import CargoScan
from ingest.batch import Batch
from ingest.manifest import parse_manifest
from ingest.parcels import plan_from_manifest
from ingest.pipeline import Pipeline
from ingest.replay import pipeline_for

T0 = 1_795_500_000_000_000
EPC = "3074257BF7194E4000001A85"
DAY: dict[str, Any] = {
    "stops": [{"stop_id": "HUB", "kind": "hub", "radius_m": 80,
               "geofence": {"type": "Point", "coordinates": [13.40, 52.52]}},
              {"stop_id": "S-1", "kind": "delivery", "radius_m": 40,
               "geofence": {"type": "Point", "coordinates": [13.41, 52.53]}}],
    "vehicles": [{"vehicle_id": "VAN-1"}],
    "parcels": [],
    "routes": [{"vehicle_id": "VAN-1", "hub_stop_id": "HUB", "stop_ids": ["S-1"]}],
}  # fmt: skip


def scan(p: Pipeline, at_s: int) -> list[tuple[Any, ...]]:
    """One inventory of VAN-1 with the tag aboard, in a batch of its own: its events."""
    batch = Batch(10**9, 10**9, 10**9)
    row, change = p.cargo_row("VAN-1", CargoScan(T0 + at_s * 1_000_000, (EPC,)))
    batch.add_row("cargo", row)
    if change is not None:
        batch.add_evidence("cargo", change)
    drained = batch.drain()
    p.process(drained)
    return drained.rows.get("parcel_event", [])


def test_a_tag_seen_before_its_parcel_was_planned_is_bound_by_the_next_inventory() -> None:
    p = pipeline_for(parse_manifest(DAY))
    assert scan(p, 0) == []  # "added", but no parcel of the plan has the tag
    later = {**DAY, "parcels": [{"tracking_number": "MP100200300", "epc": EPC, "stop_id": "S-1"}]}
    plan, fences = plan_from_manifest(parse_manifest(later))
    p.set_fences(fences)
    assert p.set_plan(plan)
    events = scan(p, 15)  # nothing changed aboard, but the parcel is bound to no van
    assert [(e[2], e[4], e[5]) for e in events] == [("MP100200300", "InTransit_007", "VAN-1")]
    assert scan(p, 30) == []  # once bound, inventories are evidence only
