"""Typed settings, read once per process from ``MILEPOST_*`` and an optional ``milepost.toml``.

Environment variables win over the file. An unknown ``MILEPOST_*`` variable, or an
unknown key in the file, is an error at start-up that names it: a typo must not
silently fall back to a default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "MILEPOST_"
CONFIG_FILE_ENV = "MILEPOST_CONFIG"  # path of milepost.toml; default ./milepost.toml if present


class SettingsError(ValueError):
    """The configuration is invalid; the message says which key and why."""


class Settings(BaseModel):
    """Every setting, its type and default. Defaults point at the local stack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = "postgresql://milepost@127.0.0.1:55432/milepost"
    mqtt_url: str = "mqtt://127.0.0.1:18830"
    mqtt_client_id: str = "milepost-ingest"
    # mqtts:// checks the broker's certificate against these CAs (PEM; default: the
    # system's); the local stack's Mosquitto also listens with TLS on MQTT_TLS_PORT when
    # given a certificate and its key (PEM)
    mqtt_ca_file: Path | None = None
    mqtt_tls_cert: Path | None = None
    mqtt_tls_key: Path | None = None
    api_addr: str = "127.0.0.1:8000"
    # HTTPS for milepost api: a certificate (chain) and its key, PEM; both or neither
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    state_dir: Path = Path("var")
    webhook_allow_private: bool = False
    # ingest batching: flush when a batch holds this many rows or is this old
    batch_max_rows: int = Field(default=5000, ge=1, le=1_000_000)
    batch_max_ms: int = Field(default=200, ge=1, le=60_000)
    # bound on rows waiting for the writer; MQTT reads pause (backpressure) above it
    queue_max_rows: int = Field(default=200_000, ge=1000)
    stats_interval_s: float = Field(default=10.0, gt=0)
    db_pool_max: int = Field(default=4, ge=1, le=100)
    # the largest request body the API reads (413 beyond); PUT /v1/manifest has its own,
    # api.routes.manifest.MAX_BYTES (64 MiB)
    api_max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # retention, in days, run by milepost ingest with drop_chunks (0 keeps for ever):
    # raw positions and tag reads; gate passes, parcel events and what they come from
    retention_raw_days: int = Field(default=30, ge=0, le=36_500)
    retention_events_days: int = Field(default=730, ge=0, le=36_500)
    # API rate limit per key and process: requests a second on average, and the burst
    rate_limit_per_s: float = Field(default=50.0, ge=0)  # 0: no limit
    rate_limit_burst: int = Field(default=200, ge=1)
    # pages: the customer tracking page's brand, the time zone it shows times in, and an
    # optional map tile server for the dashboard (none: vector layers on a plain background)
    brand_name: str = Field(default="milepost", min_length=1, max_length=80)
    brand_color: str = Field(default="#1f5fbf", pattern=r"^#[0-9A-Fa-f]{6}$")
    brand_logo_url: str | None = None
    timezone: str = "UTC"
    map_tiles_url: str | None = None  # e.g. https://tiles.example.com/{z}/{x}/{y}.png
    map_attribution: str = ""
    log_level: str = "INFO"
    config: Path | None = None  # MILEPOST_CONFIG, the toml file itself

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("mqtt", "mqtts"):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return v

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from exc
        return v

    @field_validator("api_addr")
    @classmethod
    def _check_addr(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8000")
        return v

    @model_validator(mode="after")
    def _check_tls_pairs(self) -> Settings:
        for cert, key in (("api_tls_cert", "api_tls_key"), ("mqtt_tls_cert", "mqtt_tls_key")):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"{cert} and {key} go together: give both or neither")
        for name in ("mqtt_ca_file", "mqtt_tls_cert", "mqtt_tls_key", "api_tls_cert",
                     "api_tls_key"):  # fmt: skip
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path}")
        return self

    @property
    def api_host(self) -> str:
        return self.api_addr.rpartition(":")[0]

    @property
    def api_port(self) -> int:
        return int(self.api_addr.rpartition(":")[2])


def _known_keys() -> set[str]:
    return set(Settings.model_fields)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and ``milepost.toml``; fail loudly on unknown keys."""
    env = dict(os.environ if environ is None else environ)
    known = _known_keys()
    unknown = sorted(
        k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() not in known
    )
    if unknown:
        raise SettingsError(
            f"unknown setting {', '.join(unknown)}; known settings are "
            + ", ".join(ENV_PREFIX + k.upper() for k in sorted(known))
        )
    values: dict[str, Any] = {}
    path_text = env.get(CONFIG_FILE_ENV)
    path = Path(path_text) if path_text else Path("milepost.toml")
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {exc}") from exc
        bad = sorted(k for k in data if k not in known)
        if bad:
            raise SettingsError(f"{path}: unknown key {', '.join(bad)}")
        values.update(data)
    elif path_text:
        raise SettingsError(f"{CONFIG_FILE_ENV}={path_text}: no such file")
    for key in known:
        if ENV_PREFIX + key.upper() in env:
            values[key] = env[ENV_PREFIX + key.upper()]
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msgs.append(f"{ENV_PREFIX}{loc.upper()}: {err['msg']}")
        raise SettingsError("; ".join(msgs)) from exc
