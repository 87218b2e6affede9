"""MQTT transport: the only module that imports aiomqtt.

Persistent session (fixed client id, clean session off) at QoS 1, so the broker queues
while milepost is down; the broker's ``persistent_client_expiration`` bounds how long.
MQTT 3.1.1, not 5: paho builds a properties object for every MQTT 5 message, and a bare
subscriber measured here takes 3.2 times as many QoS 1 messages a second over 3.1.1
(benchmarks/results/ingest.json); ingest uses nothing that only MQTT 5 has. The window of
unacknowledged messages is the broker's ``max_inflight_messages``.

Acknowledgements are manual: a message is acknowledged only once everything it produced
has committed (aiomqtt issue #345: paho's ``manual_ack_set`` / ``ack``), so a crash at
any point loses nothing and the broker redelivers what was not acknowledged.

Receiving: aiomqtt reads the socket on the event loop and paho calls ``on_message`` there
for each PUBLISH. milepost takes that callback over (private attributes, as for the
acknowledgements): the message goes to ``take``, which handles the common case at once,
with no ``aiomqtt.Message``, queue, task or coroutine per message (measured: those cost
more than decoding a one-fix message). What ``take`` declines, and everything after it
while anything waits, goes in order through ``pending`` to the async ``handler``.

paho reads a packet with three or four ``recv`` calls (type byte, length bytes, body)
and aiomqtt's reader takes one packet per wake-up of the event loop. The socket paho
reads from is wrapped in :class:`BufferedReads`: one ``recv`` takes up to 64 KiB, and
its ``pending`` count (the hook aiomqtt has for TLS sockets, whose buffers ``select``
cannot see) makes aiomqtt's reader go on until the buffer is empty.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
YIELD_S = 0.001  # see MqttSource._handle_pending
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, message id
# paho 2's queue of outgoing packets (private); without it, paho's ack one by one
_PACKET_QUEUE = hasattr(paho.Client, "_packet_queue")


class AckToken(NamedTuple):
    """What the broker needs to release one message: the connection it came on and its id.
    (A named tuple: one is made per message, at a third of a frozen dataclass's cost.)"""

    generation: int
    mid: int
    qos: int


# the message, handled on the event loop in receipt order
Handler = Callable[[str, bytes, AckToken], Awaitable[None]]
# handles the message at once and returns True, or returns False to have it go to Handler
Take = Callable[[str, bytes, AckToken], bool]


def _decline(_topic: str, _payload: bytes, _token: AckToken) -> bool:
    return False


class BufferedReads:
    """paho's socket, read in chunks of up to ``chunk`` bytes; everything else passes
    through. ``recv`` returns at most what it is asked for, from the chunk first; it
    reaches the socket only when the chunk is used up, so what it raises (no data yet,
    TLS wants to read) and its ``b""`` at the end of the stream are the socket's own."""

    def __init__(self, sock: Any, chunk: int = 65536) -> None:
        self._sock = sock
        self._chunk = chunk
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            data: bytes = self._sock.recv(max(size, self._chunk))
            if len(data) <= size:
                return data
            self._buf, buf, pos = data, data, 0
        end = min(pos + size, len(buf))
        self._pos = end
        return buf[pos:end]

    def pending(self) -> int:
        """Bytes received and not read yet (a TLS socket's own too)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        sent: int = self._sock.send(data)
        return sent

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        fd: int = self._sock.fileno()
        return fd

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None = None  # mqtts://: the CAs the broker's certificate must chain to

    @classmethod
    def from_url(
        cls, url: str, default_credentials: tuple[str, str] | None = None,
        ca_file: str | None = None,
    ) -> BrokerAddress:  # fmt: skip
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if user is None and default_credentials is not None:
            user, password = default_credentials
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883),
                   user, password, tls, ca_file)  # fmt: skip


class MqttSource:
    """Subscribes, hands every message to ``take`` or ``handler`` in order, and reconnects
    with backoff.

    ``pending`` holds the messages ``take`` declined, and any after them, until
    ``handler`` has handled them. Its bound is the broker's: it holds messages received
    and not yet acknowledged, at most the receive window, as aiomqtt's queue did before
    (and a Mosquitto that overruns its window on a resumed session overruns it here too).
    Nothing is dropped; a reconnect discards it, and the broker delivers it again.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        topics: Iterable[str],
        handler: Handler,
        take: Take = _decline,
    ) -> None:
        self._address = address
        self._client_id = client_id
        self._topics = tuple(topics)
        self._handler = handler
        self._take = take
        self._client: aiomqtt.Client | None = None
        self._generation = 0
        self.pending: deque[tuple[str, bytes, AckToken]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._closing = False
        self.connected = False
        self.connects = 0

    def ack(self, tokens: Iterable[AckToken]) -> int:
        """Acknowledge messages of the current connection, in the order received.

        Tokens of an earlier connection are skipped: the broker redelivers those
        messages on the new session, and the writer stores each fix once. The PUBACKs
        of a batch go to paho as one packet of them all (paho's ``ack`` queues and
        sends each of its own, four bytes a ``send``); they are in order either way.
        """
        client = self._client
        if client is None:
            return 0
        c = client._client
        generation = self._generation
        mids = [t.mid for t in tokens if t.generation == generation and t.qos == 1]
        if mids and _PACKET_QUEUE:
            c._packet_queue(paho.PUBACK, b"".join(map(_PUBACK.pack, repeat(paho.PUBACK),
                                                      repeat(2), mids)), 0, 0)  # fmt: skip
        else:
            for mid in mids:
                c.ack(mid, 1)
        return len(mids)

    def _make_client(self) -> aiomqtt.Client:
        a = self._address
        client = aiomqtt.Client(
            a.host,
            a.port,
            username=a.username,
            password=a.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            keepalive=30,
            timeout=10,
            # mqtts://: the broker's certificate and host name checked (system CAs by default)
            tls_params=aiomqtt.TLSParameters(ca_certs=a.ca_file) if a.tls else None,
        )
        # must be set before CONNECT: a persistent session delivers queued messages at once
        c = client._client
        c.manual_ack_set(True)
        c.on_message = self._on_message
        aiomqtt_socket_open = c.on_socket_open

        def on_socket_open(paho_client: paho.Client, userdata: Any, sock: Any) -> None:
            """(paho, on connect) read through a BufferedReads, then aiomqtt's own"""
            buffered = BufferedReads(sock)
            paho_client._sock = buffered
            if aiomqtt_socket_open is not None:
                aiomqtt_socket_open(paho_client, userdata, buffered)

        c.on_socket_open = on_socket_open
        return client

    def _on_message(self, _paho: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        """paho's callback for each PUBLISH, on the event loop: to ``take`` at once when
        nothing waits before it, else to ``pending``. It must not raise: paho would
        re-raise, and aiomqtt drop the connection."""
        if self._closing:  # not taken, not acknowledged: the session delivers it again (QoS 1)
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:  # (brokers refuse such topics): a dead letter
            topic = message._topic.decode("utf-8", "replace")
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        token = AckToken(self._generation, message.mid, message.qos)
        pending = self.pending
        if pending or not self._take(topic, payload, token):
            pending.append((topic, payload, token))
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    async def _handle_pending(self, client: aiomqtt.Client) -> None:
        """Hand ``pending`` to ``take`` or else ``handler``, in order, until the connection
        ends (``take`` declined the first of them, maybe not the ones after it).

        After back-pressure ``pending`` holds up to a receive window, and handling it
        would keep the event loop from the writer's round trips for tens of ms (measured:
        its BEGIN waited 17 ms): it lets the loop run every ``YIELD_S`` of handling."""
        disconnected: asyncio.Future[None] = client._disconnected
        loop = asyncio.get_running_loop()
        pending = self.pending
        clock = time.perf_counter
        while True:
            since = clock()
            while pending and not self._closing:
                # it stays first in line while it is handled, so nothing overtakes it
                topic, payload, token = pending[0]
                if not self._take(topic, payload, token):
                    await self._handler(topic, payload, token)
                pending.popleft()
                if clock() - since > YIELD_S:
                    await asyncio.sleep(0)
                    since = clock()
            if disconnected.done():
                raise aiomqtt.MqttError("Disconnected during message iteration") from (
                    disconnected.exception()
                )
            self._wake = wake = loop.create_future()
            try:
                await asyncio.wait((wake, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._wake = None

    def close_intake(self) -> None:
        """Take no more messages (ingest is stopping); acknowledging goes on."""
        self._closing = True

    async def run(self) -> None:
        """Run until cancelled; broker outages are logged once and retried with backoff."""
        delay = BACKOFF_MIN_S
        down_since: float | None = None
        while True:
            client = self._make_client()
            # before CONNECT: a resumed session delivers at once, tokens must name this one
            self._generation += 1
            self._client = client
            self.pending.clear()  # the broker delivers these again on the new session
            try:
                async with client:
                    self.connected = True
                    self.connects += 1
                    for topic in self._topics:
                        await client.subscribe(topic, qos=1)
                    if down_since is not None:
                        log.info("broker connection restored after %.1f s",
                                 time.monotonic() - down_since)  # fmt: skip
                    else:
                        log.info("connected to broker %s:%d as %s, subscribed to %s",
                                 self._address.host, self._address.port,
                                 self._address.username, ", ".join(self._topics))  # fmt: skip
                    down_since = None
                    delay = BACKOFF_MIN_S
                    await self._handle_pending(client)
            except aiomqtt.MqttError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # the disconnect of a cancel failed
                    raise asyncio.CancelledError from exc
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("broker unavailable (%s); retrying with backoff", exc)
            finally:
                self.connected = False
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
