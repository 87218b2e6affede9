"""The parcel lifecycle, rule by rule, on a small day (pure: no I/O, event time only)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from geo.lifecycle import ParcelBook, PlanParcels

S = 1_000_000
T0 = 1_795_504_502_000_000
ROUTES = {"VAN-1": ["S-1", "S-2"], "VAN-2": ["S-3"]}
PLAN = PlanParcels(
    tracking_number=["P1", "P2", "P3", "P4"],
    epc=["E1", "E2", "E3", "E4"],
    stop_id=["S-1", "S-2", "S-3", "S-1"],
    promised_us=[T0 + 3600 * S, None, None, T0 + 7200 * S],
    temp_min_c=[None, None, None, 2.0],
    temp_max_c=[None, None, None, 8.0],
)


def book() -> ParcelBook:
    b = ParcelBook()
    b.set_plan(PLAN, ROUTES)
    return b


def state(b: ParcelBook, tn: str) -> tuple[str, str, str | None]:
    i = b.parcel_of_tracking(tn)
    van = int(b.vehicle[i])
    return (("InfoReceived", "InTransit", "OutForDelivery", "AttemptFail", "Delivered",
             "Exception", "Expired")[int(b.status[i])], b.sub_status[i],
            b.vehicle_ids[van] if van >= 0 else None)  # fmt: skip


def test_read_loaded_out_delivered_by_the_cargo_reader() -> None:
    b = book()
    p1 = b.parcels_of_epcs(["e1"])  # any case
    ev = b.hub_read(p1, T0, False)
    assert (ev.status, ev.sub_status, ev.tracking_number) == (["InTransit"], ["InTransit_002"],
                                                              ["P1"])  # fmt: skip
    ev = b.bind(p1, ["VAN-1"], T0 + 60 * S, 0.6, ["gate"])
    assert ev.sub_status == ["InTransit_007"] and ev.vehicle_id == ["VAN-1"]
    assert ev.detail[0] == {"evidence": "gate", "confidence": 0.6}
    ev = b.cargo("VAN-1", T0 + 70 * S, p1, [], [], [], [])
    assert len(ev) == 0 and b.confidence[p1[0]] == 0.95  # the same van: evidence only
    ev = b.departed_hub("VAN-1", T0 + 600 * S)
    assert ev.sub_status[ev.tracking_number.index("P1")] == "OutForDelivery_001"
    # removed from the inventory while the van was at S-1; stamped when first missed, and
    # settled once the van's time is a minute past that
    ev = b.cargo("VAN-1", T0 + 1300 * S, [], p1, [T0 + 1280 * S], ["S-1"], ["delivery"])
    assert len(ev) == 0 and len(b.advance("VAN-1", T0 + 1339 * S)) == 0
    ev = b.advance("VAN-1", T0 + 1340 * S)
    assert (ev.status, ev.ts_us, ev.stop_id) == (["Delivered"], [T0 + 1280 * S], ["S-1"])
    assert state(b, "P1") == ("Delivered", "Delivered_001", "VAN-1")
    # Delivered is final
    assert len(b.pod(int(p1[0]), "VAN-1", T0 + 1400 * S, False, None, "nobody home")) == 0


def test_a_van_whose_route_does_not_serve_the_stop_is_a_misload() -> None:
    b = book()
    ev = b.bind(b.parcels_of_epcs(["E3"]), ["VAN-1"], T0, 0.9, ["gate"])
    assert ev.sub_status == ["Exception_MISLOAD"] and ev.status == ["Exception"]
    ev = b.departed_hub("VAN-1", T0 + 600 * S)
    assert "P3" not in ev.tracking_number and state(b, "P3")[1] == "Exception_MISLOAD"
    # rebinding to the right van (seen in its cargo) clears it
    ev = b.cargo("VAN-2", T0 + 700 * S, b.parcels_of_epcs(["E3"]), [], [], [], [])
    assert ev.sub_status == ["InTransit_007"] and state(b, "P3")[2] == "VAN-2"


def test_left_behind_when_the_hub_saw_it_and_by_plan_when_there_is_no_rfid() -> None:
    b = book()
    b.hub_read(b.parcels_of_epcs(["E2"]), T0, False)  # read at the hub, never loaded
    b.bind(b.parcels_of_epcs(["E1"]), ["VAN-1"], T0 + 10 * S, 0.6, ["gate"])
    ev = b.departed_hub("VAN-1", T0 + 600 * S)
    got = dict(zip(ev.tracking_number, ev.sub_status, strict=True))
    # P4 was never read, but VAN-1 was loaded by RFID: it is behind too
    assert got == {"P1": "OutForDelivery_001", "P2": "Exception_LEFT_BEHIND",
                   "P4": "Exception_LEFT_BEHIND"}  # fmt: skip
    assert ev.detail[ev.tracking_number.index("P2")] == {"planned_vehicle_id": "VAN-1"}
    # a hub without gates: the plan is all there is
    b = book()
    ev = b.departed_hub("VAN-1", T0 + 600 * S)
    assert sorted(ev.tracking_number) == ["P1", "P2", "P4"]
    assert set(ev.sub_status) == {"OutForDelivery_001"} and set(ev.vehicle_id) == {"VAN-1"}
    assert ev.detail[0]["evidence"] == "plan"


def test_dropped_at_another_stop_is_a_wrong_drop_and_back_at_the_hub_is_unloaded() -> None:
    b = book()
    p1, p4 = b.parcels_of_epcs(["E1"]), b.parcels_of_epcs(["E4"])
    b.bind(np.concatenate([p1, p4]), ["VAN-1", "VAN-1"], T0, 0.6, ["gate", "gate"])
    b.departed_hub("VAN-1", T0 + 600 * S)
    b.cargo("VAN-1", T0 + 900 * S, [], np.concatenate([p1, p4]),
            [T0 + 880 * S, T0 + 890 * S], ["S-2", "HUB-1"], ["delivery", "hub"])
    ev = b.advance("VAN-1", T0 + 960 * S)
    assert list(zip(ev.tracking_number, ev.sub_status, ev.stop_id, strict=True)) == [
        ("P1", "Exception_WRONG_DROP", "S-2"), ("P4", "InTransit_002", "S-1")]
    assert ev.vehicle_id == ["VAN-1", None]
    assert state(b, "P1")[2] is None and state(b, "P4") == ("InTransit", "InTransit_002", None)


def test_leaving_the_stop_with_the_parcel_aboard_is_a_failed_attempt_after_the_grace() -> None:
    b = book()
    p1, p4 = b.parcels_of_epcs(["E1"]), b.parcels_of_epcs(["E4"])
    both = np.concatenate([p1, p4])
    b.cargo("VAN-1", T0, both, [], [], [], [])  # loaded, seen by the van's reader
    b.departed_hub("VAN-1", T0 + 600 * S)
    b.left_stop("VAN-1", "S-1", T0 + 1300 * S, dwell_s=120.0)
    assert len(b.advance("VAN-1", T0 + 1350 * S)) == 0  # the reader may not have told yet
    # P4's removal at S-1 arrives within the grace: delivered, not failed
    b.cargo("VAN-1", T0 + 1320 * S, [], p4, [T0 + 1290 * S], ["S-1"], ["delivery"])
    ev = b.advance("VAN-1", T0 + 1420 * S)
    assert (ev.tracking_number, ev.sub_status, ev.ts_us) == (["P4", "P1"], [
        "Delivered_001", "AttemptFail_001"], [T0 + 1290 * S, T0 + 1300 * S])  # fmt: skip
    # a drive-through (short visit) is no attempt, and a van without a reader infers nothing
    b2 = book()
    b2.bind(p1, ["VAN-1"], T0, 0.6, ["gate"])
    b2.departed_hub("VAN-1", T0 + 600 * S)
    b2.left_stop("VAN-1", "S-1", T0 + 1300 * S, dwell_s=300.0)
    assert len(b2.advance("VAN-1", T0 + 2000 * S)) == 0


def test_a_tag_the_reader_missed_for_a_while_is_no_removal() -> None:
    b = book()
    p1 = b.parcels_of_epcs(["E1"])
    b.cargo("VAN-1", T0, p1, [], [], [], [])
    b.departed_hub("VAN-1", T0 + 60 * S)
    b.cargo("VAN-1", T0 + 300 * S, [], p1, [T0 + 270 * S], ["S-2"], ["delivery"])
    ev = b.cargo("VAN-1", T0 + 315 * S, p1, [], [], [], [])  # there after all
    assert len(ev) == 0 and len(b.advance("VAN-1", T0 + 900 * S)) == 0
    assert state(b, "P1") == ("OutForDelivery", "OutForDelivery_001", "VAN-1")


def test_proof_of_delivery_signed_far_and_failed() -> None:
    b = book()
    p1, p2 = (int(b.parcel_of_tracking(t)) for t in ("P1", "P2"))
    ev = b.pod(p1, "VAN-1", T0, True, 400.0, signed_by="J. Doe")
    assert ev.sub_status == ["Delivered_003"]
    assert ev.detail == [{"evidence": "pod", "signed_by": "J. Doe", "dist_m": 400.0,
                          "far_from_stop": True}]  # fmt: skip
    ev = b.pod(p2, "VAN-1", T0, False, 12.0, reason="business closed")
    assert (ev.status, ev.vehicle_id) == (["AttemptFail"], ["VAN-1"])
    assert ev.detail == [{"evidence": "pod", "reason": "business closed", "dist_m": 12.0}]


def test_cold_chain_and_late_fire_once() -> None:
    b = book()
    b.bind(b.parcels_of_epcs(["E4", "E1"]), ["VAN-1", "VAN-1"], T0, 0.6, ["gate", "gate"])
    assert len(b.sensor("VAN-1", T0 + S, 5.0)) == 0
    ev = b.sensor("VAN-1", T0 + 2 * S, 9.5)
    assert (ev.tracking_number, ev.sub_status) == (["P4"], ["Exception_COLD_CHAIN"])
    assert len(b.sensor("VAN-1", T0 + 3 * S, 11.0)) == 0
    assert len(b.sensor("VAN-2", T0 + 3 * S, 30.0)) == 0
    p = b.parcels_of_epcs(["E1", "E2", "E4"])
    ev = b.eta(p, T0 + 60 * S, [T0 + 3601 * S, T0 + 9 * 3600 * S, T0 + 100 * S])
    assert (ev.tracking_number, ev.detail) == (["P1"], [{"evidence": "eta", "late_by_s": 1}])
    assert len(b.eta(p, T0 + 120 * S, [T0 + 4000 * S] * 3)) == 0


def test_an_outbound_pass_with_no_van_is_an_exception_until_a_cargo_scan_binds_it() -> None:
    b = book()
    p2 = b.parcels_of_epcs(["E2"])
    b.hub_read(p2, T0, False)
    ev = b.unbound(p2, T0 + S, ["several_vans"], [2])
    assert ev.sub_status == ["Exception_UNBOUND"]
    assert ev.detail == [{"reason": "several_vans", "candidates": 2}]
    ev = b.cargo("VAN-1", T0 + 30 * S, p2, [], [], [], [])
    assert ev.sub_status == ["InTransit_007"] and ev.detail[0]["evidence"] == "cargo"
    assert len(b.unbound(p2, T0 + 40 * S, ["no_van"], [0])) == 0  # bound now


def test_a_reloaded_plan_keeps_state_and_a_restart_restores_it() -> None:
    b = book()
    b.bind(b.parcels_of_epcs(["E1"]), ["VAN-1"], T0, 0.6, ["gate"])
    more = PlanParcels(["P0", *PLAN.tracking_number], ["E0", *PLAN.epc],
                       ["S-3", *PLAN.stop_id], [None, *PLAN.promised_us])  # fmt: skip
    b.set_plan(more, ROUTES)
    assert state(b, "P1") == ("InTransit", "InTransit_007", "VAN-1")
    assert state(b, "P0") == ("InfoReceived", "InfoReceived_001", None)
    fresh = book()
    fresh.seed("P1", "OutForDelivery", "OutForDelivery_001", "VAN-1", T0)
    fresh.seed("NOPE", "Delivered", None, None, T0)  # not in the plan: ignored
    i = fresh.parcel_of_tracking("P1")
    assert state(fresh, "P1")[0] == "OutForDelivery" and bool(fresh.out[i])


def test_a_restart_in_the_middle_of_an_attempt_and_a_removal_settles_them_the_same() -> None:
    """kill -9 between a van leaving a stop (attempt pending) and a cargo removal's
    confirmation: a book seeded from parcel_latest and given ``transient()`` back answers
    the next events exactly as the book that never stopped."""
    def upto_crash() -> ParcelBook:
        b = book()
        p1, p4 = b.parcels_of_epcs(["E1"]), b.parcels_of_epcs(["E4"])
        b.cargo("VAN-1", T0, np.concatenate([p1, p4]), [], [], [], [])
        b.departed_hub("VAN-1", T0 + 600 * S)
        b.left_stop("VAN-1", "S-1", T0 + 1300 * S, dwell_s=120.0)
        b.cargo("VAN-1", T0 + 1320 * S, [], p4, [T0 + 1290 * S], ["S-1"], ["delivery"])
        return b

    def rest(b: ParcelBook) -> list[tuple[str, str, int]]:
        ev = b.advance("VAN-1", T0 + 1420 * S)
        return list(zip(ev.tracking_number, ev.sub_status, ev.ts_us, strict=True))

    kept = upto_crash()
    state_json = orjson.loads(orjson.dumps(kept.transient()))  # as stored, as read back
    assert state_json["attempts"] == {"VAN-1": [["P1", T0 + 1300 * S], ["P4", T0 + 1300 * S]]}
    assert state_json["removals"] == {"VAN-1": [["P4", T0 + 1290 * S, "S-1", "delivery"]]}
    assert state_json["out_vans"] == state_json["cargo_vans"] == ["VAN-1"]
    restarted = book()
    for tn in PLAN.tracking_number:
        restarted.seed(tn, *state(kept, tn), T0 + 600 * S)
    forgetful = book()  # the restart before ingest_state: seeded alone
    for tn in PLAN.tracking_number:
        forgetful.seed(tn, *state(kept, tn), T0 + 600 * S)
    restarted.restore_transient(state_json)
    want = rest(kept)
    assert want == [("P4", "Delivered_001", T0 + 1290 * S), ("P1", "AttemptFail_001",
                                                            T0 + 1300 * S)]  # fmt: skip
    assert rest(restarted) == want
    assert rest(forgetful) == []  # what was lost before
    assert restarted.transient() == kept.transient()
    with pytest.raises(ValueError, match="version"):  # ingest starts without it, warned
        book().restore_transient({**state_json, "v": 99})
