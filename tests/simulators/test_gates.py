"""Gate simulator: the plan on its own, then real pseudo-terminals driven by a pyserial host
that frames and decodes what it reads with the ingest's own framers and decoders."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial

from devices.epc import decode_epc
from devices.errors import DecodeError
from devices.records import ReaderStatus, TagRead
from devices.rfid import PROTOCOLS, chafon, mercury
from simulators.gates import (
    CHAFON_RSSI,
    PARCEL_COOLDOWN_S,
    RSSI_DBM,
    Carry,
    CarryPlanner,
    GateSim,
    GateSpec,
    GateStats,
    LineNoise,
    chafon_rssi,
    parcel_epcs,
)
from tests.devices.rfid import check_record

Record = TagRead | ReaderStatus

# ------------------------------------------------------------------ the plan, no I/O

GATES = [GateSpec("G-1", "mercury", {1: "hall", 2: "dock"}),
         GateSpec("G-2", "chafon288", {4: "dock", 3: "hall", 5: "hall"})]  # fmt: skip


def test_same_seed_same_carries_other_seed_other_carries() -> None:
    plans = []
    for seed in (5, 5, 6):
        planner = CarryPlanner(GATES, seed, van_epcs=["3154257BF4499602D2000000"])
        planner.plan_until(1800.0)
        plans.append(planner.planned())
    a, b, c = plans
    assert [p.carry for p in a] == [p.carry for p in b]
    assert all(np.array_equal(x.t_s, y.t_s) and np.array_equal(x.antenna, y.antenna)
               and np.array_equal(x.rssi_dbm, y.rssi_dbm) for x, y in zip(a, b, strict=True))
    assert [p.carry for p in a] != [p.carry for p in c]


def test_carries_read_like_parcels_through_a_door() -> None:
    planner = CarryPlanner(GATES, 11, van_epcs=["3154257BF4499602D2000000"], carries_per_min=4)
    planner.plan_until(3600.0)
    planned = planner.planned()
    spec = {g.gate_id: g for g in GATES}
    kinds = Counter(p.carry.direction for p in planned)
    assert kinds["out"] > kinds["in"] > 0 and kinds["parked"] > 0
    assert 0.7 < len(planned) / (4 * 60 * len(GATES)) < 1.3  # carries_per_min per gate
    for p in planned:
        c, gate = p.carry, spec[p.carry.gate_id]
        n, duration = len(p.t_s), c.t_end_s - c.t_start_s
        assert np.all(np.diff(p.t_s) >= 0) and c.t_start_s <= p.t_s[0] <= p.t_s[-1] <= c.t_end_s
        assert set(p.antenna.tolist()) <= set(gate.antennas)
        assert np.all((p.rssi_dbm >= RSSI_DBM[0]) & (p.rssi_dbm <= RSSI_DBM[1]))
        if c.direction == "parked":
            assert set(p.antenna.tolist()) <= set(gate.role("dock")) and duration >= 20
            continue
        assert 1.5 <= duration <= 3.0 and 5 <= n / duration <= 50  # 10-40 reads/s, Poisson
        # RSSI rises then falls: the middle third is stronger than the first and last
        phase = (p.t_s - c.t_start_s) / duration
        middle = (phase > 1 / 3) & (phase < 2 / 3)
        assert p.rssi_dbm[middle].mean() > p.rssi_dbm[~middle].mean()
        # hall antenna first when going out to a van, dock antenna first when coming in
        on_hall = np.isin(p.antenna, gate.role("hall"))
        first, last = (on_hall, ~on_hall) if c.direction == "out" else (~on_hall, on_hall)
        assert first.any() and last.any()
        assert p.t_s[first].mean() < p.t_s[last].mean()


def test_a_parcel_is_carried_out_and_in_by_turns_never_twice_at_once() -> None:
    planner = CarryPlanner(GATES, 3, epcs=parcel_epcs(np.random.default_rng(0), 12),
                           carries_per_min=6)  # fmt: skip
    planner.plan_until(7200.0)
    by_epc: dict[str, list[Carry]] = defaultdict(list)
    for p in planner.planned():
        by_epc[p.carry.epc_hex].append(p.carry)
    assert len(by_epc) == 12
    for carries in by_epc.values():
        for prev, nxt in itertools.pairwise(carries):
            assert nxt.t_start_s >= prev.t_end_s + PARCEL_COOLDOWN_S
            assert nxt.direction != prev.direction


def test_parcel_epcs_are_distinct_gs1_epcs() -> None:
    epcs = parcel_epcs(np.random.default_rng(1), 500)
    schemes = Counter(decode_epc(e).scheme for e in epcs)
    assert len(set(epcs)) == 500 and set(schemes) == {"sscc-96", "sgtin-96"}
    assert schemes["sscc-96"] > schemes["sgtin-96"]


def test_chafon_rssi_maps_the_dbm_range_onto_the_vendor_byte() -> None:
    scale = [chafon_rssi(d) for d in range(RSSI_DBM[0] - 5, RSSI_DBM[1] + 6)]
    assert scale[0] == scale[5] == CHAFON_RSSI[0] and scale[-1] == scale[-6] == CHAFON_RSSI[1]
    assert scale == sorted(scale)


def test_gate_spec_checks_itself_and_round_trips_the_manifest() -> None:
    entry = {"gate_id": "G-3", "dock_stop_id": "DOCK-3", "url": "/dev/ttyUSB0",
             "protocol": "chafon288", "baud": 57600, "antennas": {"1": "hall", "2": "dock"}}
    spec = GateSpec.from_manifest(entry)
    assert spec.antennas == {1: "hall", 2: "dock"} and spec.manifest_entry("/dev/ttyUSB0") == entry
    bad: list[dict[str, Any]] = [
        {"protocol": "impinj"}, {"antennas": {}}, {"antennas": {16: "hall"}},
        {"antennas": {1: "yard"}}, {"gate_id": "../etc"}, {"autonomous": True}]
    for change in bad:
        with pytest.raises(ValueError):
            GateSpec(**({"gate_id": "G-1", "protocol": "mercury"} | change))


# ------------------------------------------------------------------ over pseudo-terminals

HORIZON_S = 1.5  # no carry starts later; the last one ends by 3.5 s
MARGIN_S = 0.6  # past the last carry: longer than a polled reader's look-back (0.5 s)
NOISE = LineNoise(corrupt_prob=0.08, garbage_prob=0.08)


def _sim(tmp_path: Path, spec: GateSpec, **kw: object) -> GateSim:
    opts: dict[str, object] = dict(
        link_dir=tmp_path / "gates", carries_per_min=150, carry_s=(1.5, 2.0),
        first_carry_s=0.3, carry_until_s=HORIZON_S, noise=NOISE)
    return GateSim([spec], 7, **(opts | kw))  # type: ignore[arg-type]


class Host:
    """What the ingest does with a gate: pyserial on its path, framer, decoder."""

    def __init__(self, path: Path, protocol: str) -> None:
        self.port = serial.serial_for_url(str(path), baudrate=115200, timeout=0.05)
        self.framer = PROTOCOLS[protocol].framer()
        self.decode = PROTOCOLS[protocol].decode
        self.records: list[Record] = []
        self.errors = 0  # frames the decoder refused (dead letters)

    def poll(self) -> Iterator[tuple[bytes, list[Record]]]:
        data = self.port.read(max(1, self.port.in_waiting))  # what is there, or wait 50 ms
        for frame in self.framer.feed(data) if data else self.framer.flush():
            try:
                records = self.decode(frame)
            except DecodeError:
                self.errors += 1
                continue
            for r in records:
                check_record(r)
            self.records += records
            yield frame, records

    def step(self) -> None:
        for _ in self.poll():
            pass

    def pump(self, until: Callable[[], bool]) -> None:
        while not until():
            self.step()

    def exchange(self, command: bytes, done: Callable[[bytes], bool], timeout_s: float = 0.2
                 ) -> list[Record] | None:  # fmt: skip
        """Send ``command``; the records of the reply frame ``done`` picks (None: lost)."""
        self.port.write(command)
        deadline = time.monotonic() + timeout_s
        reply = None
        while reply is None and time.monotonic() < deadline:
            for frame, records in self.poll():
                if reply is None and done(frame):
                    reply = records
        return reply

    def reads(self) -> list[TagRead]:
        return [r for r in self.records if isinstance(r, TagRead)]


def _run(sim: GateSim, step: Callable[[], None]) -> tuple[list[Carry], GateStats]:
    """Drive the host with ``step`` until every carry has ended, plus a margin."""
    while sim.elapsed_s() < HORIZON_S + 0.1:
        step()
    end = max(c.t_end_s for c in sim.carries()) + MARGIN_S
    while sim.elapsed_s() < end:
        step()
    return sim.carries(), sim.stats()["G-1"]


def _check(host: Host, carries: list[Carry], stats: GateStats, spec: GateSpec, *,
           batch: bool = False) -> None:  # fmt: skip
    """``batch``: Mercury's buffer records sum an inventory's reads of a tag, so a carry has
    only a few, in frames of several records: their order and corruption are not checked."""
    epcs = [c.epc_hex for c in carries]
    assert len(carries) >= 3 and len(set(epcs)) == len(epcs)  # reads per EPC: one carry
    reads = host.reads()
    got = Counter(r.epc_hex for r in reads)
    written = {c.epc_hex: c.reads_written for c in carries}
    # every EPC carried through the door is read, and nothing else
    assert set(got) == set(epcs)
    # line noise happened, and every frame it hit was refused while the next one was read
    assert stats.frames_corrupted > 0 and stats.garbage_bursts > 0
    assert batch or sum(c.corrupted_frames for c in carries) > 0
    if spec.protocol == "ascii":  # no CRC: the decoder refuses the lines
        assert host.errors == stats.frames_corrupted + stats.garbage_bursts
        assert got == written
    else:  # the framer drops them on their CRC
        assert host.framer.discarded >= stats.garbage_bytes
        if host.errors == 0:
            assert got == written
        else:  # noise matched a CRC by chance (p ~ noise bytes / 65536): a few reads lost
            assert all(got[e] <= written[e] for e in written)
            assert sum(got.values()) >= 0.9 * sum(written.values())
    # antennas and RSSI as the protocol carries them
    by_epc: dict[str, list[TagRead]] = defaultdict(list)
    for r in reads:
        by_epc[r.epc_hex].append(r)
    for c in carries:
        rs = by_epc[c.epc_hex]
        if spec.protocol == "chafon18":  # UHFReader18 reports neither
            assert all(r.antenna == -1 and math.isnan(r.rssi) for r in rs)
            continue
        assert {r.antenna for r in rs} == set(spec.antennas)
        if spec.protocol == "chafon288":
            assert all(not r.rssi_dbm and CHAFON_RSSI[0] <= r.rssi <= CHAFON_RSSI[1] for r in rs)
        else:
            assert all(r.rssi_dbm and RSSI_DBM[0] <= r.rssi <= RSSI_DBM[1] for r in rs)
        if not batch:  # in the order the host received them: hall then dock for "out"
            hall = [i for i, r in enumerate(rs) if spec.antennas[r.antenna] == "hall"]
            dock = [i for i, r in enumerate(rs) if spec.antennas[r.antenna] == "dock"]
            before, after = (hall, dock) if c.direction == "out" else (dock, hall)
            assert np.mean(before) < np.mean(after), c


@pytest.mark.parametrize(("protocol", "autonomous"), [
    ("mercury", False), ("ascii", False), ("chafon18", True), ("chafon288", True)])
def test_streamed_frames_carry_every_parcel(tmp_path: Path, protocol: str, autonomous: bool
                                           ) -> None:  # fmt: skip
    spec = GateSpec("G-1", protocol, {1: "hall", 2: "dock"}, autonomous=autonomous)
    with _sim(tmp_path, spec) as sim:
        host = Host(sim.path("G-1"), protocol)
        if protocol == "mercury":
            host.port.write(mercury.cmd_start_continuous())
        carries, stats = _run(sim, host.step)
        host.port.close()
    _check(host, carries, stats, spec)
    kinds = Counter(r.kind for r in host.records if isinstance(r, ReaderStatus))
    if protocol == "mercury" or autonomous:
        assert kinds["keepalive"] >= 2  # a keep-alive / heartbeat about once a second


def _last_inventory_frame(frame: bytes) -> bool:
    return frame[2] == chafon.CMD_INVENTORY and frame[3] != chafon.STATUS_MORE


def _poll_chafon(host: Host, command: Callable[[int], bytes], cycle: list[int]) -> None:
    """One inventory at 20 Hz, the antennas in turn."""
    started = time.monotonic()
    cycle.append(cycle.pop(0))
    host.exchange(command(cycle[0]), _last_inventory_frame)
    host.pump(lambda: time.monotonic() - started >= 0.05)


def _poll_mercury(host: Host) -> None:
    """One batch cycle: inventory 250 ms, fetch the buffer, clear it."""
    reply = host.exchange(mercury.cmd_read_tag_multiple(250), lambda f: f[2] == 0x22, 0.4)
    count = max([r.count for r in reply or [] if isinstance(r, ReaderStatus)], default=0)
    fetched = 0
    while fetched < count:
        got = host.exchange(mercury.cmd_get_tag_buffer(), lambda f: f[2] == 0x29)
        if not got or not any(isinstance(r, TagRead) for r in got):
            break  # reply lost, or the buffer is empty
        fetched += sum(isinstance(r, TagRead) for r in got)
    host.exchange(mercury.cmd_clear_tag_buffer(), lambda f: f[2] == 0x2A)


@pytest.mark.parametrize("protocol", ["chafon18", "chafon288", "mercury"])
def test_polled_readers_answer_every_inventory(tmp_path: Path, protocol: str) -> None:
    spec = GateSpec("G-1", protocol, {1: "hall", 2: "dock"})
    # a batch cycle is a few frames: more noise, so that some hits them
    noise = LineNoise(0.2, 0.2) if protocol == "mercury" else NOISE
    with _sim(tmp_path, spec, chafon_tags_per_frame=1, noise=noise) as sim:
        host = Host(sim.path("G-1"), protocol)
        cycle = [1, 2]
        if protocol == "mercury":
            carries, stats = _run(sim, lambda: _poll_mercury(host))
        else:
            command: Callable[[int], bytes] = (
                (lambda _: chafon.cmd_inventory18()) if protocol == "chafon18"
                else (lambda a: chafon.cmd_inventory288(antenna=a)))
            carries, stats = _run(sim, lambda: _poll_chafon(host, command, cycle))
        host.port.close()
    _check(host, carries, stats, spec, batch=protocol == "mercury")
    kinds = Counter(r.kind for r in host.records if isinstance(r, ReaderStatus))
    if protocol == "mercury":
        assert any(r.read_count > 1 for r in host.reads())
    else:
        assert kinds["more"] > 0 and kinds["cycle_end"] > 0  # 0x03 then 0x01


def test_set_up_commands_are_answered(tmp_path: Path) -> None:
    gates = [GateSpec("M", "mercury"), GateSpec("C", "chafon288")]
    with GateSim(gates, 1, link_dir=tmp_path, first_carry_s=60.0) as sim:
        m, c = Host(sim.path("M"), "mercury"), Host(sim.path("C"), "chafon288")
        version = m.exchange(mercury.encode_command(0x03), lambda f: f[2] == 0x03)
        stop = m.exchange(mercury.cmd_stop_continuous(), lambda f: f[2] == 0x2F)
        info = c.exchange(chafon.encode_command(chafon.CMD_READER_INFO), lambda f: f[2] == 0x21)
        no_ant = c.exchange(chafon.cmd_inventory288(antenna=3), lambda f: f[2] == 0x01)
        empty = c.exchange(chafon.cmd_inventory288(antenna=1), lambda f: f[2] == 0x01)
        m.port.close()
        c.port.close()
    assert version == [ReaderStatus("response", 0x03, "")]
    assert stop == [ReaderStatus("cycle_end", 0x2F, "continuous reading stopped")]
    assert info == [ReaderStatus("response", 0x21, "status 0x00: 00160C034E001E0A01000000")]
    assert no_ant is not None and no_ant[0] == ReaderStatus("health", 0xF8, "antenna error")
    assert empty == [ReaderStatus("cycle_end", chafon.STATUS_DONE, "inventory finished")]


def test_unplug_hangs_up_the_old_port_and_the_same_path_reads_on(tmp_path: Path) -> None:
    spec = GateSpec("G-1", "mercury")
    with GateSim([spec], 3, link_dir=tmp_path, carries_per_min=240, first_carry_s=0.1,
                 keepalive_s=0.2, noise=LineNoise(0.0, 0.0)) as sim:  # fmt: skip
        gate, path = sim.gates["G-1"], sim.path("G-1")
        before = os.readlink(path)
        host = Host(path, "mercury")
        host.port.write(mercury.cmd_start_continuous())
        host.pump(lambda: len(host.reads()) >= 5)
        gate.unplug()
        assert os.readlink(path) == gate.device != before
        with pytest.raises(serial.SerialException):  # EOF: the device went away
            for _ in range(10):
                host.port.read(4096)
        host.port.close()
        again = Host(path, "mercury")  # the same path, a new pty
        again.port.write(mercury.cmd_start_continuous())  # the reader was powered off
        deadline = time.monotonic() + 3.0
        again.pump(lambda: len(again.reads()) >= 5 or time.monotonic() > deadline)
        again.port.close()
        assert sim.stats()["G-1"].unplugs == 1
    assert len(again.reads()) >= 5
    assert not path.exists()  # stop() removed the link


def test_unplug_every_n_seconds_a_reconnecting_host_keeps_reading(tmp_path: Path) -> None:
    spec = GateSpec("G-1", "ascii")
    with GateSim([spec], 4, link_dir=tmp_path, carries_per_min=240, first_carry_s=0.1,
                 unplug_every_s=0.4, noise=LineNoise(0.0, 0.0)) as sim:  # fmt: skip
        host, reconnects, lines = Host(sim.path("G-1"), "ascii"), 0, 0
        while sim.elapsed_s() < 2.2:
            try:
                host.step()
            except serial.SerialException:  # as the ingest's reader thread does
                lines += len(host.reads())
                host.port.close()
                host = Host(sim.path("G-1"), "ascii")
                reconnects += 1
        host.port.close()
        unplugs = sim.stats()["G-1"].unplugs
    assert unplugs >= 4 and reconnects >= 3
    assert lines + len(host.reads()) > 20


def test_run_keeps_the_event_loop_free(tmp_path: Path) -> None:
    sim = GateSim([GateSpec("G-1", "ascii")], 5, link_dir=tmp_path, carries_per_min=240,
                  first_carry_s=0.0)  # fmt: skip

    async def main() -> int:
        ticks = 0
        run = asyncio.create_task(sim.run(0.5), name="gate-sim")
        while not run.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await run
        return ticks

    assert asyncio.run(main()) >= 25  # the loop kept turning every 10 ms or so
    assert sim.stats()["G-1"].frames_written > 0 and not (tmp_path / "G-1").exists()
