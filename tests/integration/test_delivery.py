"""At least once from the broker, exactly once in the table: kill -9 ingest mid-stream."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from tests.integration.conftest import Proc, forget_session, scratch_database, wait_until
from tests.integration.test_gps_slice import BROKER, count


def paced_publisher(vid: str, password: str, total: int
                    ) -> tuple[subprocess.Popen[bytes], threading.Thread]:  # fmt: skip
    """``mosquitto_pub -l`` at QoS 1 for ``vid``, fed fixes 0..total-1 (seq = k, one a
    second of event time two hours back) at ~2,000 a second from a thread, so a fault
    comes while they still flow, however fast ingest drains."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    lines = [orjson.dumps({"ts": (t0 + timedelta(seconds=k)).isoformat(),
                           "lat": 52.5, "lon": 13.4 + k * 1e-6, "seq": k}) + b"\n"
             for k in range(total)]  # fmt: skip
    publisher = subprocess.Popen(
        ["mosquitto_pub", *BROKER, "-u", vid, "-P", password, "-q", "1",
         "-t", f"fleet/{vid}/gps", "-l"], stdin=subprocess.PIPE,
    )  # fmt: skip
    assert publisher.stdin is not None
    stdin = publisher.stdin

    def feed() -> None:
        for k in range(0, total, 100):
            stdin.write(b"".join(lines[k : k + 100]))
            stdin.flush()
            time.sleep(0.05)
        stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return publisher, feeder


def test_kill_9_mid_stream_loses_nothing_and_stores_nothing_twice(
    spawn: Callable[..., Proc], cli: Callable[..., str], db: psycopg.Connection,
) -> None:
    client_id = f"milepost-crash-{secrets.token_hex(3)}"
    env = {"MILEPOST_MQTT_CLIENT_ID": client_id, "MILEPOST_BATCH_MAX_ROWS": "200"}
    first = spawn("ingest", extra_env=env)
    first.wait_for("subscribed to")
    vid = f"CRASH-{secrets.token_hex(3)}"
    password = cli("devices", "add", vid)
    time.sleep(0.3)
    total = 5000
    publisher, feeder = paced_publisher(vid, password, total)

    def stored() -> int:
        return count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s", vid)

    wait_until(lambda: stored() >= 500, what="some fixes stored before the crash")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    at_crash = stored()
    assert at_crash < total, "the crash came too late to test anything"
    feeder.join(30)
    assert publisher.wait(60) == 0

    second = spawn("ingest", extra_env=env)  # same client id: the broker resumes the session
    second.wait_for("subscribed to")
    wait_until(lambda: stored() >= total, timeout=60, what=f"all {total} fixes")
    time.sleep(1.0)  # anything redelivered late would show up now
    assert stored() == total
    seqs = [r[0] for r in db.execute(
        "SELECT seq FROM gps_fix WHERE vehicle_id = %s ORDER BY seq", (vid,))]
    assert seqs == list(range(total))
    second.stop()  # it would read every gate and store every fix alongside the shared ingest
    forget_session(client_id)


def test_sigterm_writes_and_acknowledges_what_was_taken_and_the_rest_waits_in_the_broker(
    spawn: Callable[..., Proc], cli: Callable[..., str],
) -> None:
    """SIGTERM mid-stream: ingest stops taking messages, writes and acknowledges what it
    took, and exits; the next session gets only the rest, so nothing is delivered twice.
    Counted in a database of its own (another ingest of the session stores these fixes
    too, under its own session)."""
    with scratch_database("milepost_term") as url, psycopg.connect(url, autocommit=True) as db:
        _sigterm_mid_stream(spawn, cli, db, {"MILEPOST_DATABASE_URL": url})


def _sigterm_mid_stream(spawn: Callable[..., Proc], cli: Callable[..., str],
                        db: psycopg.Connection, extra: dict[str, str]) -> None:  # fmt: skip
    client_id = f"milepost-term-{secrets.token_hex(3)}"
    env = {"MILEPOST_MQTT_CLIENT_ID": client_id, "MILEPOST_BATCH_MAX_ROWS": "200", **extra}
    first = spawn("ingest", extra_env=env)
    first.wait_for("subscribed to")
    vid = f"TERM-{secrets.token_hex(3)}"
    password = cli("devices", "add", vid)
    total = 6000
    publisher, feeder = paced_publisher(vid, password, total)

    def stored() -> int:
        return count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s", vid)

    wait_until(lambda: stored() >= 500, what="some fixes stored before the stop")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0, first.text()
    at_stop = stored()
    assert at_stop < total, "the stop came too late to test anything"
    said = re.search(r"stopped in [\d.]+ s: .* in all (\d+) fixes stored", first.text())
    assert said is not None, first.text()
    assert int(said.group(1)) == at_stop  # what it wrote, and nothing after it went
    feeder.join(30)
    assert publisher.wait(60) == 0

    second = spawn("ingest", extra_env=env)  # the session kept the rest
    second.wait_for("subscribed to")
    wait_until(lambda: stored() >= total, timeout=60, what=f"all {total} fixes")
    time.sleep(1.0)
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(30) == 0, second.text()
    assert stored() == total
    seqs = [r[0] for r in db.execute(
        "SELECT seq FROM gps_fix WHERE vehicle_id = %s ORDER BY seq", (vid,))]
    assert seqs == list(range(total))
    # every fix the first one wrote was acknowledged before it disconnected
    again = re.search(r"in all (\d+) fixes stored, duplicates (\d+)", second.text())
    assert again is not None, second.text()
    assert (int(again.group(1)), int(again.group(2))) == (total - at_stop, 0)
    forget_session(client_id)
