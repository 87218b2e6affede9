import numpy as np

from devices.records import GpsFix, fixes_to_array
from ingest.batch import Batch, FixFrame
from ingest.stages import dedupe, run_stages, validate

NOW_US = 1_795_504_502_000_000


def frame_of(rows: list[tuple[str, GpsFix]]) -> FixFrame:
    batch = Batch(10_000, 10_000, 1000)
    for vid, fix in rows:
        batch.add_fixes(vid, fixes_to_array([fix]), NOW_US)
    return batch.drain().fixes


def test_validate_rejects_each_kind_of_bad_fix_with_its_reason() -> None:
    good = GpsFix(NOW_US, 13.4, 52.5, 5.0, 90.0)
    frame = frame_of([
        ("V1", good),
        ("V1", GpsFix(NOW_US, 13.4, 95.0)),
        ("V1", GpsFix(NOW_US, 181.0, 52.5)),
        ("V2", GpsFix(NOW_US, 0.0, 0.0)),
        ("V2", GpsFix(NOW_US, float("nan"), 52.5)),
        ("V2", GpsFix(NOW_US + 26 * 3600 * 10**6, 13.4, 52.5)),
        ("V2", GpsFix(NOW_US, 13.4, 52.5, -1.0)),
        ("V3", GpsFix(NOW_US - 1, 13.4, 52.5, 0.0)),
    ])
    result = validate(frame)
    assert len(result.frame) == 2
    assert result.frame.fix["ts_us"].tolist() == [NOW_US, NOW_US - 1]
    reasons = [d.reason for d in result.rejected]
    assert reasons == [
        "invalid fix: latitude out of range [-90, 90]",
        "invalid fix: longitude out of range [-180, 180]",
        "invalid fix: position is (0, 0), a receiver with no fix",
        "invalid fix: coordinates are not finite numbers",
        "invalid fix: timestamp more than 25 h ahead of receipt",
        "invalid fix: negative speed",
    ]
    assert [d.source for d in result.rejected] == ["vehicle:V1"] * 2 + ["vehicle:V2"] * 4


def test_validate_matches_a_scalar_loop_on_seeded_data() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(500):
        rows.append(("V", GpsFix(int(NOW_US + rng.integers(-10**12, 10**12)),
                                 float(rng.uniform(-200, 200)), float(rng.uniform(-100, 100)),
                                 float(rng.uniform(-5, 30)))))
    frame = frame_of(rows)
    kept = validate(frame).frame.fix

    def ok(f: GpsFix) -> bool:
        return (-90 <= f.lat_deg <= 90 and -180 <= f.lon_deg <= 180 and f.speed_mps >= 0
                and f.ts_us <= NOW_US + 25 * 3600 * 10**6 and f.ts_us >= 946_684_800_000_000)

    assert kept["ts_us"].tolist() == [f.ts_us for _, f in rows if ok(f)]


def test_dedupe_keeps_the_first_fix_per_vehicle_and_time() -> None:
    frame = frame_of([("A", GpsFix(NOW_US, 1, 1)), ("B", GpsFix(NOW_US, 2, 2)),
                      ("A", GpsFix(NOW_US, 3, 3)), ("A", GpsFix(NOW_US + 1, 4, 4))])
    out = dedupe(frame).frame
    assert out.fix["lon_deg"].tolist() == [1, 2, 4]


def test_run_stages_applies_all_in_order() -> None:
    frame = frame_of([("A", GpsFix(NOW_US, 1, 1)), ("A", GpsFix(NOW_US, 1, 1)),
                      ("A", GpsFix(NOW_US, 0, 0))])
    result = run_stages(frame)
    assert len(result.frame) == 1 and len(result.rejected) == 1
