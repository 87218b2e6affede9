import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTErrorCode

from ingest import mqtt
from ingest.mqtt import AckToken, BrokerAddress, BufferedReads, MqttSource


class FakeSocket:
    """Hands out the chunks it was given, one per recv, then says it has nothing."""

    def __init__(self, chunks: list[bytes | type[Exception]]) -> None:
        self.chunks = chunks
        self.asked: list[int] = []

    def recv(self, size: int) -> bytes:
        self.asked.append(size)
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if isinstance(chunk, type):
            raise chunk
        return chunk[:size]

    def fileno(self) -> int:
        return 7


def test_buffered_reads_serve_small_reads_from_one_recv() -> None:
    sock = FakeSocket([b"\x30\x05hello\x30", b"\x01x", b""])
    r = BufferedReads(sock, chunk=1024)
    assert [r.recv(1), r.recv(1), r.recv(5), r.recv(1)] == [b"\x30", b"\x05", b"hello", b"\x30"]
    assert sock.asked == [1024] and r.pending() == 0
    assert r.recv(3) == b"\x01x"  # what there is, not more than asked
    assert r.pending() == 0
    assert r.recv(1) == b""  # the end of the stream
    with pytest.raises(BlockingIOError):
        r.recv(1)
    assert r.fileno() == 7


def test_buffered_reads_count_what_is_left_and_pass_errors_through() -> None:
    sock = FakeSocket([ConnectionResetError, b"abcdef"])
    r = BufferedReads(sock, chunk=4)
    with pytest.raises(ConnectionResetError):
        r.recv(1)
    assert r.recv(2) == b"ab"  # asked for max(2, 4): got 4
    assert r.pending() == 2
    assert r.recv(10) == b"cd" and r.pending() == 0


def _source(take: Callable[[str, bytes, AckToken], bool], handled: list[Any]) -> MqttSource:
    async def handler(topic: str, payload: bytes, token: AckToken) -> None:
        handled.append((topic, token.mid))
        await asyncio.sleep(0)

    return MqttSource(BrokerAddress("127.0.0.1", 1, None, None, False), client_id="t",
                      topics=["fleet/+/gps"], handler=handler, take=take)  # fmt: skip


def _message(topic: bytes, mid: int, qos: int = 1) -> paho.MQTTMessage:
    m = paho.MQTTMessage(mid, topic)
    m.payload, m.qos = b"{}", qos
    return m


def test_nothing_overtakes_a_message_take_declined() -> None:
    order: list[tuple[str, int]] = []  # (who, mid) in the order they handled messages

    def take(topic: str, payload: bytes, token: AckToken) -> bool:
        if topic.endswith("/cargo"):
            return False
        order.append(("take", token.mid))
        return True

    async def run() -> None:
        handled: list[Any] = []
        src = _source(take, handled)
        client = src._make_client()
        on_message = client._client.on_message
        assert on_message is not None
        topics = [b"fleet/A/gps", b"fleet/A/cargo", b"fleet/A/gps", b"fleet/B/gps"]
        for mid, topic in enumerate(topics, 1):
            on_message(client._client, None, _message(topic, mid))
        # 3 and 4 wait behind 2, which waits for the handler
        assert order == [("take", 1)] and [t[2].mid for t in src.pending] == [2, 3, 4]
        task = asyncio.create_task(src._handle_pending(client))
        for _ in range(10):
            await asyncio.sleep(0)
            order.extend(("handler", mid) for _, mid in handled)
            handled.clear()
        assert order == [("take", 1), ("handler", 2), ("take", 3), ("take", 4)]
        assert not src.pending
        on_message(client._client, None, _message(b"fleet/C/gps", 5))  # at once again
        assert order[-1] == ("take", 5)
        client._disconnected.set_exception(aiomqtt.MqttError("gone"))
        with pytest.raises(aiomqtt.MqttError):
            await task

    asyncio.run(run())


def test_acks_of_a_batch_are_one_packet_of_pubacks_in_order() -> None:
    queued: list[tuple[int, bytes]] = []

    async def run() -> None:
        src = _source(lambda *_: True, [])
        client = src._make_client()
        src._client, src._generation = client, 3

        def queue(command: int, packet: bytes | bytearray, mid: int, qos: int,
                  info: object = None) -> MQTTErrorCode:  # fmt: skip
            queued.append((command, bytes(packet)))
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        client._client._packet_queue = queue  # type: ignore[method-assign]
        tokens = [
            AckToken(3, 1, 1),
            AckToken(2, 9, 1),
            AckToken(3, 0x1234, 1),
            AckToken(3, 5, 0),
        ]  # an old connection's and a QoS 0 one: not acknowledged
        assert src.ack(tokens) == 2
        assert src.ack([AckToken(2, 7, 1)]) == 0

    asyncio.run(run())
    assert queued == [(paho.PUBACK, b"\x40\x02\x00\x01\x40\x02\x12\x34")]


def test_acks_without_paho_s_packet_queue_go_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    acked: list[tuple[int, int]] = []
    monkeypatch.setattr(mqtt, "_PACKET_QUEUE", False)

    async def run() -> None:
        src = _source(lambda *_: True, [])
        client = src._make_client()
        src._client, src._generation = client, 1
        monkeypatch.setattr(client._client, "ack",
                            lambda mid, qos: acked.append((mid, qos)))  # fmt: skip
        assert src.ack([AckToken(1, 4, 1), AckToken(1, 5, 1)]) == 2

    asyncio.run(run())
    assert acked == [(4, 1), (5, 1)]
