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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class AckToken:
    """What the broker needs to release one message: the connection it came on and its id."""

    generation: int
    mid: int
    qos: int


Handler = Callable[[str, bytes, AckToken], Awaitable[None]]


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


async def _messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    """``client.messages``, without its two tasks and ``asyncio.wait`` per message.

    aiomqtt's iterator waits on the queue and the disconnect future for every message; a
    backlog of queued messages then costs more in the event loop than in ingest. Here
    messages already queued are taken at once, and only an empty queue is waited on.
    (Private attributes, as for manual acknowledgements: aiomqtt #345.)
    """
    queue: asyncio.Queue[aiomqtt.Message] = client._queue
    disconnected: asyncio.Future[None] = client._disconnected
    while True:
        try:
            yield queue.get_nowait()
            continue
        except asyncio.QueueEmpty:
            pass
        if disconnected.done():
            raise aiomqtt.MqttError("Disconnected during message iteration") from (
                disconnected.exception())
        get = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait((get, disconnected), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            get.cancel()
            raise
        if get.done():
            yield get.result()
        else:
            get.cancel()


class MqttSource:
    """Subscribes, hands every message to ``handler`` in order, and reconnects with backoff."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        topics: Iterable[str],
        handler: Handler,
    ) -> None:
        self._address = address
        self._client_id = client_id
        self._topics = tuple(topics)
        self._handler = handler
        self._client: aiomqtt.Client | None = None
        self._generation = 0
        self.connected = False
        self.connects = 0

    def ack(self, tokens: Iterable[AckToken]) -> int:
        """Acknowledge messages of the current connection, in the order received.

        Tokens of an earlier connection are skipped: the broker redelivers those
        messages on the new session, and the writer stores each fix once.
        """
        client = self._client
        if client is None:
            return 0
        paho = client._client
        n = 0
        for t in tokens:
            if t.generation == self._generation and t.qos > 0:
                paho.ack(t.mid, t.qos)
                n += 1
        return n

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
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Run until cancelled; broker outages are logged once and retried with backoff."""
        delay = BACKOFF_MIN_S
        down_since: float | None = None
        while True:
            client = self._make_client()
            try:
                async with client:
                    self._generation += 1
                    self._client = client
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
                    generation = self._generation
                    async for message in _messages(client):
                        await self._handler(
                            message.topic.value,
                            bytes(message.payload) if not isinstance(message.payload, bytes)
                            else message.payload,
                            AckToken(generation, message.mid, message.qos),
                        )
            except aiomqtt.MqttError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("broker unavailable (%s); retrying with backoff", exc)
            finally:
                self.connected = False
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
