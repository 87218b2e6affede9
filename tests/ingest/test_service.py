import asyncio
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from ingest.mqtt import AckToken, BrokerAddress
from ingest.service import Ingest
from milepost.settings import load_settings

FIX = b'{"ts": 1795936502.5, "lat": 52.5, "lon": 13.4}'


def _ingest(tmp_path: Path, **settings: object) -> Ingest:
    url = "postgresql://nobody@127.0.0.1:1/none"  # never connected to
    s = load_settings({}, database_url=url, mqtt_url="mqtt://127.0.0.1:1", state_dir=tmp_path,
                      mqtt_client_id="test", **settings)  # fmt: skip
    return Ingest(s, AsyncConnectionPool(url, open=False), BrokerAddress.from_url(s.mqtt_url))


def test_take_handles_gps_json_of_a_known_topic_at_once(tmp_path: Path) -> None:
    async def run() -> None:
        ing = _ingest(tmp_path)
        assert not ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 1, 1))  # not seen before
        await ing.on_message("fleet/VAN-1/gps", FIX, AckToken(1, 1, 1))
        assert ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 2, 1))
        assert ing.take("fleet/VAN-1/gps", b"{not json", AckToken(1, 3, 1))
        assert not ing.take("fleet/VAN-1/cargo", b"{}", AckToken(1, 4, 1))
        assert not ing.take("fleet/VAN-2/gps", FIX, AckToken(1, 5, 1))
        await ing.on_message("fleet/bad id/gps", FIX, AckToken(1, 6, 1))
        assert not ing.take("fleet/bad id/gps", FIX, AckToken(1, 7, 1))  # never cached
        assert ing.stats.received == 4
        drained = ing._batch.drain()
        assert [t.mid for t in drained.tokens] == [1, 2, 3, 6]
        assert [(d.payload, d.reason.split(":")[0]) for d in drained.dead] == [
            (b"{not json", "not JSON"),
            (FIX, "invalid vehicle id 'bad id' in topic"),
        ]
        assert drained.fixes.vehicles == ["VAN-1"] and len(drained.fixes) == 2

    asyncio.run(run())


def test_take_declines_when_the_batch_is_due_and_the_writer_is_behind(tmp_path: Path) -> None:
    async def run() -> None:
        ing = _ingest(tmp_path, batch_max_rows=2)
        await ing.on_message("fleet/VAN-1/gps", FIX, AckToken(1, 1, 1))
        assert ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 2, 1))  # due: closed at once
        assert ing._closed.qsize() == 1 and ing._batch.messages == 0
        assert ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 3, 1))
        assert ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 4, 1))  # due, left open
        assert ing._batch.due() and ing._batch.messages == 2
        assert not ing.take("fleet/VAN-1/gps", FIX, AckToken(1, 5, 1))  # on_message waits
        assert ing.stats.received == 4

    asyncio.run(run())
