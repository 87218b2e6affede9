"""TLS for MQTT and HTTP with certificates from configuration, tested with a self-signed CA:
ingest reads a van's fixes over mqtts:// and checks the broker's certificate; the API
serves HTTPS; neither logs a password or a key."""

from __future__ import annotations

import secrets
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from benchmarks.broker import BenchBroker
from tests.integration.conftest import Proc, free_port, wait_until


def openssl(*args: str | Path) -> None:
    out = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "key.pem", "server.csr",
                                                  "cert.pem"))  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=milepost test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def tls_broker(certs: dict[str, Path]) -> Iterator[BenchBroker]:
    broker = BenchBroker.start([f"TLS{secrets.token_hex(3).upper()}-VAN"],
                               tls=(certs["cert"], certs["key"]))  # fmt: skip
    yield broker
    broker.stop()


def pub(broker: BenchBroker, vid: str, payload: bytes,
        *tls: str) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    assert broker.tls_port is not None
    return subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.tls_port),
                           "-u", vid, "-P", broker.vans[vid], "-q", "1", "-i", f"pub-{vid}",
                           "-t", f"fleet/{vid}/gps", "-m", payload.decode(), *tls],
                          capture_output=True, timeout=30)  # fmt: skip


def test_ingest_over_mqtts_checks_the_broker_certificate(
    spawn: Callable[..., Proc], tls_broker: BenchBroker, certs: dict[str, Path],
    db: psycopg.Connection,
) -> None:
    user, password = tls_broker.ingest
    ingest = spawn("ingest", extra_env={
        "MILEPOST_MQTT_URL": f"mqtts://{user}:{password}@127.0.0.1:{tls_broker.tls_port}",
        "MILEPOST_MQTT_CA_FILE": str(certs["ca"]),
        "MILEPOST_MQTT_CLIENT_ID": f"milepost-tls-{secrets.token_hex(4)}"})  # fmt: skip
    ingest.wait_for("subscribed to")
    vid = next(iter(tls_broker.vans))
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    fix = orjson.dumps({"ts": ts.isoformat(), "lat": 52.5, "lon": 13.4})
    # a client without the CA refuses the broker's certificate; with it, the fix goes in
    assert pub(tls_broker, vid, fix, "--capath", "/etc/ssl/certs").returncode != 0
    out = pub(tls_broker, vid, fix, "--cafile", str(certs["ca"]))
    assert out.returncode == 0, out.stderr
    wait_until(lambda: db.execute("SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND"
                                  " time = %s", (vid, ts)).fetchone() == (1,),
               what="the fix sent over TLS")  # fmt: skip
    log = ingest.text()
    for secret in (password, tls_broker.vans[vid]):
        assert secret not in log
    ingest.stop()  # a second ingest on the session's database must not outlive its test


def test_ingest_refuses_a_broker_it_cannot_verify(
    spawn: Callable[..., Proc], tls_broker: BenchBroker
) -> None:
    user, password = tls_broker.ingest
    # no CA file: the system's CAs do not know the test CA, so no session is opened
    ingest = spawn("ingest", extra_env={
        "MILEPOST_MQTT_URL": f"mqtts://{user}:{password}@127.0.0.1:{tls_broker.tls_port}",
        "MILEPOST_MQTT_CLIENT_ID": f"milepost-tls-{secrets.token_hex(4)}"})  # fmt: skip
    ingest.wait_for("broker unavailable")
    assert "certificate verify failed" in ingest.text().lower()
    assert "subscribed to" not in ingest.text()
    assert password not in ingest.text()
    ingest.stop()


def test_api_serves_https_with_the_configured_certificate(
    spawn: Callable[..., Proc], certs: dict[str, Path], cli: Callable[..., str]
) -> None:
    port = free_port()
    api = spawn("api", extra_env={"MILEPOST_API_ADDR": f"127.0.0.1:{port}",
                                  "MILEPOST_API_TLS_CERT": str(certs["cert"]),
                                  "MILEPOST_API_TLS_KEY": str(certs["key"])})  # fmt: skip
    api.wait_for("Uvicorn running")
    key = cli("keys", "create", "--role", "dispatcher")
    trust = ssl.create_default_context(cafile=str(certs["ca"]))
    r = httpx.get(f"https://127.0.0.1:{port}/v1/vehicles", verify=trust,
                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
        httpx.get(f"https://127.0.0.1:{port}/healthz")
    with pytest.raises(httpx.HTTPError):  # and plain HTTP is not served
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    assert key not in api.text() and key.split("_")[2] not in api.text()


def test_tls_settings_go_in_pairs_and_must_exist(tmp_path: Path,
                                                 certs: dict[str, Path]) -> None:  # fmt: skip
    from milepost.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="api_tls_cert and api_tls_key go together"):
        load_settings({"MILEPOST_API_TLS_CERT": str(certs["cert"])})
    with pytest.raises(SettingsError, match="no such file"):
        load_settings({"MILEPOST_MQTT_CA_FILE": str(tmp_path / "missing.pem")})
    s = load_settings({"MILEPOST_API_TLS_CERT": str(certs["cert"]),
                       "MILEPOST_API_TLS_KEY": str(certs["key"])})  # fmt: skip
    assert s.api_tls_cert == certs["cert"]
