"""The local stack: TimescaleDB and Mosquitto under a state directory.

``up`` provisions what is missing on a Debian or Ubuntu machine (run as root) and
starts both services on private loopback ports; ``down`` stops exactly the
processes it started, through their PID files; ``status`` says what runs where.

Layout of the state directory (``var/`` by default)::

    pg/           PostgreSQL data directory (owned by the cluster's system user, 0700)
    pg-run/       its unix socket
    pg-log/       its log files
    mqtt/         mosquitto.conf, passwd, acl, users.json, ingest.credentials,
                  mosquitto.log, mosquitto.pid (owned by the broker's system user)
    mqtt/data/    Mosquitto persistence
    run/          postgres.pid
    build/        timescaledb.log (and the source tree while it builds)

The parsing and rendering helpers are pure functions so they can be tested without
a machine to provision; everything with side effects sits below them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DATABASE_URL",
    "INGEST_USER",
    "MQTT_PORT",
    "MQTT_URL",
    "PG_PORT",
    "StackError",
    "StackInfo",
    "add_broker_acl",
    "add_broker_user",
    "down",
    "ingest_credentials",
    "start_broker",
    "start_postgres",
    "status",
    "stop_broker",
    "stop_postgres",
    "up",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PG_PORT = 55432
MQTT_PORT = 18830
MQTT_TLS_PORT = 18883  # only when `stack up` is given a certificate (MILEPOST_MQTT_TLS_CERT)
DB_NAME = "milepost"
DB_ROLE = "milepost"
DATABASE_URL = f"postgresql://{DB_ROLE}@{HOST}:{PG_PORT}/{DB_NAME}"
MQTT_URL = f"mqtt://{HOST}:{MQTT_PORT}"
INGEST_USER = "milepost-ingest"
MIN_PG_MAJOR = 15

#: Debian codename -> the next release, whose ``timescaledb`` source package we build.
NEXT_DEBIAN: Mapping[str, str] = {
    "buster": "bullseye",
    "bullseye": "bookworm",
    "bookworm": "trixie",
    "trixie": "forky",
}

BASE_PACKAGES = ("mosquitto", "mosquitto-clients")
#: What building TimescaleDB with its ``bootstrap`` script needs, besides
#: ``postgresql-server-dev-<major>`` (which brings libpq-dev and libssl-dev along).
BUILD_PACKAGES = ("build-essential", "cmake", "dpkg-dev", "xz-utils", "libssl-dev", "libkrb5-dev")

_APT_LISTS = Path("/var/lib/apt/lists")
_APT_MAX_AGE_S = 24 * 3600
_NOT_ROOT_HINT = (
    "run as root, or set MILEPOST_DATABASE_URL and MILEPOST_MQTT_URL to use your own services"
)
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class StackError(RuntimeError):
    """The local stack could not be provisioned, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class StackInfo:
    database_url: str
    mqtt_url: str
    pg_port: int
    mqtt_port: int


# ---------------------------------------------------------------------------
# Pure helpers: apt sources, distribution, rendering
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One apt source entry (a deb822 stanza or a one-line entry)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Mirror:
    uri: str
    signed_by: str | None


@dataclass(frozen=True)
class Distro:
    family: str  # "debian" or "ubuntu"
    codename: str


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 ``.sources`` file; disabled stanzas are kept with ``enabled=False``."""
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    last: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                stanzas.append(fields)
            fields, last = {}, None
            continue
        if raw[0] in " \t":
            if last is not None:
                cont = raw.strip()
                fields[last] += "\n" + ("" if cont == "." else cont)
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        fields[last] = value.strip()
    if fields:
        stanzas.append(fields)

    out: list[AptSource] = []
    for f in stanzas:
        signed_by = f.get("signed-by", "").strip("\n") or None
        out.append(
            AptSource(
                types=tuple(f.get("types", "").split()),
                uris=tuple(f.get("uris", "").split()),
                suites=tuple(f.get("suites", "").split()),
                components=tuple(f.get("components", "").split()),
                signed_by=signed_by,
                enabled=f.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
            )
        )
    return out


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse the one-line ``sources.list`` format; commented-out lines are ignored."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                continue
            for opt in rest[1:end].split():
                key, _, value = opt.partition("=")
                options[key.lower()] = value
            rest = rest[end + 1 :].strip()
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        out.append(
            AptSource(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=options.get("signed-by") or None,
            )
        )
    return out


def uri_archive(uri: str) -> str | None:
    """The archive an apt URI serves, from its path: ``debian``, ``debian-security``, ``ubuntu``...

    ``http://host/debian/`` -> ``debian``; ``http://snapshot.../archive/debian/2025...`` ->
    ``debian``; ``mirror+file:/etc/apt/mirrors/debian-security.list`` -> ``debian-security``.
    Returns None for URIs that do not look like a Debian or Ubuntu archive (cdrom:, PPAs...).
    """
    parts = urlsplit(uri)
    if parts.scheme.startswith("cdrom"):
        return None
    segments = [s.removesuffix(".list") for s in parts.path.split("/") if s]
    known = ("debian-security", "debian-ports", "debian", "ubuntu-ports", "ubuntu")
    for name in known:  # the more specific names first
        if name in segments:
            return name
    return None


def select_mirror(sources: Iterable[AptSource], distro: Distro) -> Mirror | None:
    """The first enabled entry whose suites include the distro's codename and which serves
    the main archive of that distribution (not its security archive)."""
    wanted = ("debian",) if distro.family == "debian" else ("ubuntu", "ubuntu-ports")
    for src in sources:
        if not src.enabled or distro.codename not in src.suites:
            continue
        if not {"deb", "deb-src"} & set(src.types):
            continue
        for uri in src.uris:
            if uri_archive(uri) in wanted:
                return Mirror(uri=uri, signed_by=src.signed_by)
    return None


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def distro_from_os_release(fields: Mapping[str, str]) -> Distro:
    os_id = fields.get("ID", "")
    like = fields.get("ID_LIKE", "").split()
    if os_id == "ubuntu" or "ubuntu" in like:
        codename = fields.get("UBUNTU_CODENAME") or fields.get("VERSION_CODENAME", "")
        family = "ubuntu"
    elif os_id == "debian" or "debian" in like:
        codename = fields.get("VERSION_CODENAME", "")
        family = "debian"
    else:
        raise StackError(
            f"unsupported operating system {fields.get('PRETTY_NAME', os_id)!r}: the local stack "
            "provisions Debian or Ubuntu; set MILEPOST_DATABASE_URL and MILEPOST_MQTT_URL to use "
            "your own TimescaleDB and MQTT broker"
        )
    if not codename:
        raise StackError("/etc/os-release has no VERSION_CODENAME; cannot pick a source package")
    return Distro(family=family, codename=codename)


def source_suite(distro: Distro) -> str:
    """The suite whose ``timescaledb`` source package we build: Debian's next release,
    Ubuntu's own release."""
    if distro.family == "ubuntu":
        return distro.codename
    try:
        return NEXT_DEBIAN[distro.codename]
    except KeyError:
        raise StackError(
            f"do not know which Debian release follows {distro.codename!r}; install TimescaleDB "
            "for your PostgreSQL yourself (so that its timescaledb.control exists) and rerun"
        ) from None


def source_components(distro: Distro) -> tuple[str, ...]:
    return ("main",) if distro.family == "debian" else ("main", "universe")


def render_deb_src(mirror: Mirror, suite: str, components: Sequence[str]) -> str:
    """A deb822 stanza for the source package index of ``suite`` on ``mirror``."""
    lines = [
        "Types: deb-src",
        f"URIs: {mirror.uri}",
        f"Suites: {suite}",
        f"Components: {' '.join(components)}",
    ]
    if mirror.signed_by:
        first, *rest = mirror.signed_by.split("\n")
        lines.append(f"Signed-By: {first}")
        lines.extend(f" {line}" if line else " ." for line in rest)
    return "\n".join(lines) + "\n"


def dsc_field(text: str, name: str) -> str | None:
    """A top-level field of a Debian source control (.dsc) file."""
    prefix = name.lower() + ":"
    for line in text.splitlines():
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def upstream_version(debian_version: str) -> str:
    """``1:2.19.3+dfsg-1+deb13u1`` -> ``2.19.3``."""
    version = debian_version.split(":", 1)[-1]
    if "-" in version:
        version = version.rsplit("-", 1)[0]
    match = re.match(r"\d+(?:\.\d+)*", version)
    return match.group(0) if match else version


def pick_locale(available: Iterable[str]) -> str:
    """``C.UTF-8`` when the C library has it (``locale -a`` spells it ``C.utf8``), else ``C``."""
    normalized = {name.strip().lower().replace("-", "") for name in available}
    return "C.UTF-8" if "c.utf8" in normalized else "C"


def can_search(mode: int, owner_uid: int, owner_gid: int, uid: int, gids: Iterable[int]) -> bool:
    """Whether a user may traverse a directory with these permission bits (POSIX, no ACLs)."""
    if uid == 0:
        return True
    if owner_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if owner_gid in set(gids):
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def validate_username(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        raise ValueError(f"broker user name {username!r} must match [A-Za-z0-9_.-]{{1,64}}")
    if username == INGEST_USER:
        raise ValueError(f"{INGEST_USER!r} is the ingester's own account and cannot be changed")
    return username


def validate_topic_filter(pattern: str) -> str:
    """An MQTT topic filter usable in an ACL line (``owntracks/alice/#``)."""
    if not pattern or len(pattern) > 1024 or any(c in pattern for c in "\n\r\0 \t"):
        raise ValueError(f"invalid topic filter {pattern!r}")
    levels = pattern.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"invalid topic filter {pattern!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"invalid topic filter {pattern!r}: '+' must be a whole level")
    return pattern


def render_acl(users: Mapping[str, Sequence[str]], ingest_user: str = INGEST_USER) -> str:
    """The Mosquitto ACL file.

    The ingester reads everything and may publish nothing. Every other user publishes under
    ``fleet/<its name>/#`` plus its own extra filters. These are per-user ``topic write``
    lines rather than one ``pattern write fleet/%u/#``: a pattern applies to every account,
    the ingester's included, and the ACL file has no deny that leaves reading alone.
    """
    lines = [
        "# Generated by milepost.stack from users.json; edits here are overwritten.",
        "",
        "# The ingester reads everything and publishes nothing.",
        f"user {ingest_user}",
        "topic read #",
        "",
        "# Each vehicle publishes only under fleet/<its id>/, plus its extra filters.",
    ]
    for name in sorted(users):
        if name == ingest_user:
            continue
        lines += ["", f"user {name}", f"topic write fleet/{name}/#"]
        lines += [f"topic write {pattern}" for pattern in sorted(set(users[name]))]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(state_dir: Path, run_user: str, tls_port: int | None = None) -> str:
    """The broker's configuration; with ``tls_port``, a second listener there with TLS, its
    certificate and key in ``mqtt/tls/`` (``stack up`` copies them there), the same
    accounts and ACL on both."""
    mqtt = state_dir / "mqtt"
    tls = [f"listener {tls_port} {HOST}", f"certfile {mqtt / 'tls' / 'cert.pem'}",
           f"keyfile {mqtt / 'tls' / 'key.pem'}"] if tls_port else []  # fmt: skip
    return "\n".join(
        [
            "# Generated by milepost.stack; edits here are overwritten by `milepost stack up`.",
            f"pid_file {mqtt / 'mosquitto.pid'}",
            f"user {run_user}",
            "per_listener_settings false",
            f"listener {MQTT_PORT} {HOST}",
            *tls,
            "allow_anonymous false",
            f"password_file {mqtt / 'passwd'}",
            f"acl_file {mqtt / 'acl'}",
            # QoS 1 must not lose messages: see DESIGN.md, "Local stack".
            "persistence true",
            f"persistence_location {mqtt / 'data'}/",
            "autosave_interval 10",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "persistent_client_expiration 7d",
            f"log_dest file {mqtt / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",  # not information: it logs every 10 s autosave
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            "",
        ]
    )


def render_postgresql_conf(state_dir: Path) -> str:
    """Settings for a 2-core, 24 GB machine that also runs the ingester and the API."""
    settings: list[tuple[str, str]] = [
        ("listen_addresses", f"'{HOST}'"),
        ("port", str(PG_PORT)),
        ("unix_socket_directories", f"'{state_dir / 'pg-run'}'"),
        ("max_connections", "100"),
        ("shared_buffers", "1GB"),
        ("effective_cache_size", "12GB"),
        ("work_mem", "16MB"),
        ("maintenance_work_mem", "512MB"),
        ("max_worker_processes", "16"),
        ("max_parallel_workers", "2"),
        ("max_parallel_workers_per_gather", "1"),
        ("random_page_cost", "1.1"),
        ("effective_io_concurrency", "200"),
        ("synchronous_commit", "on"),
        ("wal_level", "replica"),
        ("wal_compression", "on"),
        ("wal_buffers", "16MB"),
        ("min_wal_size", "1GB"),
        ("max_wal_size", "4GB"),
        ("checkpoint_timeout", "15min"),
        ("checkpoint_completion_target", "0.9"),
        ("shared_preload_libraries", "'timescaledb'"),
        ("timescaledb.telemetry_level", "off"),
        ("timescaledb.max_background_workers", "8"),
        ("timezone", "'UTC'"),
        ("log_timezone", "'UTC'"),
        ("logging_collector", "on"),
        ("log_directory", f"'{state_dir / 'pg-log'}'"),
        ("log_filename", "'postgresql-%a.log'"),
        ("log_truncate_on_rotation", "on"),
        ("log_rotation_age", "1d"),
        ("log_rotation_size", "0"),
        ("log_line_prefix", "'%m [%p] %q%u@%d '"),
        ("log_min_duration_statement", "1000"),
        ("log_checkpoints", "on"),
        ("log_lock_waits", "on"),
    ]
    head = "# Generated by milepost.stack; edits here are overwritten by `milepost stack up`.\n"
    return head + "".join(f"{key} = {value}\n" for key, value in settings)


# ---------------------------------------------------------------------------
# Paths and small process helpers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def pg_run(self) -> Path:
        return self.root / "pg-run"

    @property
    def pg_log(self) -> Path:
        return self.root / "pg-log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pg_pid(self) -> Path:
        return self.run / "postgres.pid"

    @property
    def mqtt(self) -> Path:
        return self.root / "mqtt"

    @property
    def mqtt_conf(self) -> Path:
        return self.mqtt / "mosquitto.conf"

    @property
    def mqtt_pid(self) -> Path:
        # Mosquitto writes its pid file after dropping privileges: it lives in mqtt/.
        return self.mqtt / "mosquitto.pid"

    @property
    def passwd(self) -> Path:
        return self.mqtt / "passwd"

    @property
    def acl(self) -> Path:
        return self.mqtt / "acl"

    @property
    def users(self) -> Path:
        return self.mqtt / "users.json"

    @property
    def credentials(self) -> Path:
        return self.mqtt / "ingest.credentials"

    @property
    def build(self) -> Path:
        return self.root / "build"


def _paths(state_dir: Path) -> _Paths:
    root = Path(os.path.abspath(state_dir))
    if any(c.isspace() for c in str(root)):
        raise StackError(
            f"state directory {root} contains whitespace, which Mosquitto's config "
            "cannot express; use a path without spaces (MILEPOST_STATE_DIR)"
        )
    return _Paths(root)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _run(
    args: Sequence[str],
    *,
    what: str,
    hint: str = "",
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = "/",
    log_file: Path | None = None,
) -> str:
    """Run a command; return its stdout, or raise StackError naming it and its output's tail."""
    log.debug("running %s", " ".join(args))
    run_env = None if env is None else dict(env)
    try:
        if log_file is not None:
            with log_file.open("a") as fh:
                fh.write(f"\n$ {' '.join(args)}\n")
                fh.flush()
                returncode = subprocess.run(
                    list(args),
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=run_env,
                    cwd=cwd,
                    check=False,
                ).returncode
            output = errors = ""
        else:
            proc = subprocess.run(
                list(args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=run_env,
                cwd=cwd,
                check=False,
            )
            returncode, output, errors = proc.returncode, proc.stdout, proc.stderr
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {args[0]} not found; {hint or _NOT_ROOT_HINT}") from exc
    if returncode != 0:
        if log_file is not None:
            detail = f"see {log_file}; last lines:\n{_tail(log_file)}"
        else:
            detail = "\n".join((errors or output).strip().splitlines()[-20:])
        raise StackError(
            f"{what} failed (exit {returncode}): {detail}" + (f"\n{hint}" if hint else "")
        )
    return output


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _write_if_changed(
    path: Path, content: str, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> bool:
    """Write atomically when the content differs; always fix mode and owner. True if written."""
    try:
        changed = path.read_text() != content
    except OSError:
        changed = True
    if changed:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)
    return changed


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require_root() -> None:
    if os.geteuid() != 0:
        raise StackError(f"the local stack needs root to provision and start; {_NOT_ROOT_HINT}")


# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------


def _missing_packages(names: Sequence[str]) -> list[str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Status}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = set()
    for line in proc.stdout.splitlines():
        name, _, status_text = line.partition("\t")
        if status_text.endswith(" installed") and status_text.startswith("install "):
            installed.add(name.split(":", 1)[0])
    return [name for name in names if name not in installed]


def _apt_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


def _apt_lists_stale() -> bool:
    newest = 0.0
    for pattern in ("*_InRelease", "*_Release"):
        for path in _APT_LISTS.glob(pattern):
            newest = max(newest, path.stat().st_mtime)
    return time.time() - newest > _APT_MAX_AGE_S


def _install(packages: Sequence[str], progress: Callable[[str], None]) -> None:
    missing = _missing_packages(packages)
    if not missing:
        return
    _require_root()
    hint = f"install them yourself, or {_NOT_ROOT_HINT}"
    if _apt_lists_stale():
        progress("updating apt package lists…")
        _run(
            ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=120", "update"],
            what="apt-get update",
            hint=hint,
            env=_apt_env(),
        )
    progress(f"installing {' '.join(missing)}…")
    _run(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=120",
            *missing,
        ],
        what=f"apt-get install {' '.join(missing)}",
        hint=hint,
        env=_apt_env(),
    )


def _pg_bin(major: int) -> Path:
    return Path(f"/usr/lib/postgresql/{major}/bin")


def _installed_pg_majors() -> list[int]:
    majors = []
    for path in Path("/usr/lib/postgresql").glob("*/bin/postgres"):
        name = path.parent.parent.name
        if name.isdigit() and (path.parent / "initdb").exists():
            majors.append(int(name))
    return sorted(majors)


def _choose_pg_major(paths: _Paths, progress: Callable[[str], None]) -> int:
    version_file = paths.pg_data / "PG_VERSION"
    if version_file.exists():
        major = int(version_file.read_text().strip())
        if not (_pg_bin(major) / "postgres").exists():
            _install([f"postgresql-{major}"], progress)
        return major
    usable = [m for m in _installed_pg_majors() if m >= MIN_PG_MAJOR]
    if not usable:
        _install(["postgresql"], progress)
        usable = [m for m in _installed_pg_majors() if m >= MIN_PG_MAJOR]
    if not usable:
        raise StackError(
            f"PostgreSQL {MIN_PG_MAJOR} or newer is needed and this distribution's "
            f"default is older; {_NOT_ROOT_HINT.replace('run as root, or ', '')}"
        )
    return usable[-1]


def _pg_config(major: int) -> Path:
    return _pg_bin(major) / "pg_config"


def _timescaledb_control(major: int) -> Path:
    pg_config = _pg_config(major)
    if pg_config.exists():
        sharedir = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if sharedir:
            return Path(sharedir) / "extension" / "timescaledb.control"
    return Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control")


def _timescaledb_version(major: int) -> str | None:
    control = _timescaledb_control(major)
    if not control.exists():
        return None
    match = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text())
    return match.group(1) if match else "unknown"


# ---------------------------------------------------------------------------
# TimescaleDB from the next release's source package
# ---------------------------------------------------------------------------


def _machine_sources() -> list[AptSource]:
    sources: list[AptSource] = []
    parts = Path("/etc/apt/sources.list.d")
    one_line = [Path("/etc/apt/sources.list"), *sorted(parts.glob("*.list"))]
    for path in one_line:
        if path.exists():
            sources += parse_one_line_sources(path.read_text(errors="replace"))
    for path in sorted(parts.glob("*.sources")):
        sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def _ensure_timescaledb(paths: _Paths, major: int, progress: Callable[[str], None]) -> None:
    if _timescaledb_control(major).exists():
        return
    _require_root()
    distro = distro_from_os_release(parse_os_release(Path("/etc/os-release").read_text()))
    suite = source_suite(distro)
    mirror = select_mirror(_machine_sources(), distro)
    if mirror is None:
        raise StackError(
            f"no enabled apt source for the {distro.family} archive with suite {distro.codename!r} "
            "in /etc/apt/sources.list or /etc/apt/sources.list.d/; add one, or install TimescaleDB "
            "yourself"
        )
    _install([f"postgresql-server-dev-{major}", *BUILD_PACKAGES], progress)

    paths.build.mkdir(parents=True, exist_ok=True)
    build_log = paths.build / "timescaledb.log"
    build_log.write_text(f"TimescaleDB build for PostgreSQL {major}, {time.ctime()}\n")
    src_dir = paths.build / "timescaledb-src"
    shutil.rmtree(src_dir, ignore_errors=True)

    progress(f"fetching the timescaledb source package of {suite} from {mirror.uri}…")
    with tempfile.TemporaryDirectory(prefix="milepost-apt-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # apt downloads as the unprivileged _apt user
        lists, cache, download = tmp / "lists", tmp / "cache", tmp / "download"
        for d in (lists / "partial", cache / "archives" / "partial", download):
            d.mkdir(parents=True)
        try:
            apt_uid = pwd.getpwnam("_apt").pw_uid
            for d in (lists / "partial", download):
                os.chown(d, apt_uid, -1)
        except KeyError:
            pass
        source_list = tmp / "timescaledb-src.sources"
        source_list.write_text(render_deb_src(mirror, suite, source_components(distro)))
        apt_opts = [
            "-q",
            "-o",
            f"Dir::Etc::SourceList={source_list}",
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            f"Dir::State::Lists={lists}",
            "-o",
            f"Dir::Cache={cache}",
        ]
        hint = f"the build log is {build_log}"
        _run(
            ["apt-get", *apt_opts, "update"],
            what=f"apt-get update ({suite} sources)",
            hint=hint,
            log_file=build_log,
            env=_apt_env(),
        )
        _run(
            ["apt-get", *apt_opts, "source", "--download-only", "timescaledb"],
            what=f"apt-get source timescaledb ({suite})",
            hint=hint,
            log_file=build_log,
            cwd=download,
            env=_apt_env(),
        )
        dscs = sorted(download.glob("timescaledb_*.dsc"))
        if not dscs:
            raise StackError(f"apt-get source downloaded no timescaledb .dsc; see {build_log}")
        version = upstream_version(dsc_field(dscs[-1].read_text(errors="replace"), "Version") or "")
        _run(
            ["dpkg-source", "-x", str(dscs[-1]), str(src_dir)],
            what="dpkg-source -x",
            hint=hint,
            log_file=build_log,
            cwd=download,
        )
        for leftover in paths.build.glob("timescaledb_*"):  # dpkg-source links the orig tarball
            leftover.unlink()

    progress(
        f"building TimescaleDB {version} from the {suite} source package "
        f"(about a minute; log in {_display(build_log)})…"
    )
    started = time.monotonic()
    env = dict(os.environ, BUILD_FORCE_REMOVE="true")
    _run(
        [
            "./bootstrap",
            "-DAPACHE_ONLY=1",
            "-DREGRESS_CHECKS=OFF",
            "-DTAP_CHECKS=OFF",
            "-DUSE_TELEMETRY=OFF",
            "-DSEND_TELEMETRY_DEFAULT=OFF",
            "-DWARNINGS_AS_ERRORS=OFF",
            f"-DPG_CONFIG={_pg_config(major)}",
        ],
        what="TimescaleDB bootstrap",
        log_file=build_log,
        cwd=src_dir,
        env=env,
    )
    jobs = max(2, os.cpu_count() or 2)
    _run(
        ["make", "-C", "build", f"-j{jobs}", "install"],
        what="TimescaleDB build",
        log_file=build_log,
        cwd=src_dir,
        env=env,
    )
    control = _timescaledb_control(major)
    if not control.exists():
        raise StackError(
            f"TimescaleDB built but {control} is missing; see {build_log}:\n{_tail(build_log)}"
        )
    shutil.rmtree(src_dir, ignore_errors=True)
    elapsed = time.monotonic() - started
    log.info("built TimescaleDB %s for PostgreSQL %d in %.0f s", version, major, elapsed)
    progress(f"TimescaleDB {version} installed for PostgreSQL {major} ({elapsed:.0f} s)")


# ---------------------------------------------------------------------------
# System users and directory permissions
# ---------------------------------------------------------------------------


def _pg_user() -> pwd.struct_passwd:
    for name in ("postgres", "milepost"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    _run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "milepost",
        ],
        what="useradd milepost",
    )
    return pwd.getpwnam("milepost")


def _broker_user(fallback: pwd.struct_passwd) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return fallback


def _user_gids(user: pwd.struct_passwd) -> list[int]:
    return os.getgrouplist(user.pw_name, user.pw_gid)


def _open_ancestors(
    root: Path, users: Sequence[pwd.struct_passwd], progress: Callable[[str], None]
) -> None:
    """Add o+x (search only) to the ancestors of ``root`` (and ``root``) that a service user
    cannot traverse, e.g. a checkout under a ``mktemp -d`` directory."""
    lacking: list[Path] = []
    for directory in [*reversed(root.parents), root]:
        st = directory.stat()
        for user in users:
            if not can_search(st.st_mode, st.st_uid, st.st_gid, user.pw_uid, _user_gids(user)):
                lacking.append(directory)
                break
    if not lacking:
        return
    for directory in lacking:
        os.chmod(directory, stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
    names = ", ".join(u.pw_name for u in users)
    progress(
        f"added o+x (search, not read) so that {names} can reach {_display(root)}: "
        + " ".join(str(d) for d in lacking)
    )


def _make_dir(path: Path, owner: pwd.struct_passwd | None, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        st = path.stat()
        if (st.st_uid, st.st_gid) != (owner.pw_uid, owner.pw_gid):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def _postmaster_pid(paths: _Paths) -> int | None:
    """The pid of our running postmaster, verified through /proc, or None."""
    for pid_file in (paths.pg_data / "postmaster.pid", paths.pg_pid):
        try:
            pid = _read_pid(pid_file)
        except PermissionError:
            continue
        if pid is None:
            continue
        cmdline = _proc_cmdline(pid)
        if cmdline and Path(cmdline[0]).name == "postgres" and str(paths.pg_data) in cmdline:
            return pid
    return None


def _as_user(user: pwd.struct_passwd, args: Sequence[str]) -> list[str]:
    return ["runuser", "-u", user.pw_name, "--", *args]


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8" if pick_locale(_locales()) == "C.UTF-8" else "C"
    return env


@functools.cache
def _locales() -> tuple[str, ...]:
    proc = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    return tuple(proc.stdout.split())


def _psql(paths: _Paths, major: int, database: str, *commands: str) -> str:
    args = [
        str(_pg_bin(major) / "psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(paths.pg_run),
        "-p",
        str(PG_PORT),
        "-U",
        DB_ROLE,
        "-d",
        database,
    ]
    for command in commands:
        args += ["-c", command]
    return _run(args, what=f"psql ({database})", env=_pg_env())


def _pg_ctl(paths: _Paths, major: int, action: str, *options: str) -> None:
    """``pg_ctl ACTION`` on the cluster as its owner, waiting up to 60 s. Its log goes to
    ``pg-log/startup.log``: with ``-l``, the postmaster does not inherit our pipes (without
    it a start or restart never returns)."""
    owner = pwd.getpwuid(paths.pg_data.stat().st_uid)
    args = [str(_pg_bin(major) / "pg_ctl"), "-D", str(paths.pg_data), *options, "-w", "-t", "60"]
    if action != "stop":
        args += ["-l", str(paths.pg_log / "startup.log")]
    _run(_as_user(owner, [*args, action]), what=f"pg_ctl {action}", env=_pg_env())


def _stop_postgres(paths: _Paths) -> None:
    pg_pid = _postmaster_pid(paths)
    if pg_pid is not None:
        major = int((paths.pg_data / "PG_VERSION").read_text().strip())
        _pg_ctl(paths, major, "stop", "-m", "fast")
        log.info("stopped PostgreSQL (pid %d)", pg_pid)
    paths.pg_pid.unlink(missing_ok=True)


def _ensure_postgres(paths: _Paths, major: int, progress: Callable[[str], None]) -> None:
    user = _pg_user()
    bindir = _pg_bin(major)
    if len(str(paths.pg_run / f".s.PGSQL.{PG_PORT}")) > 107:
        raise StackError(
            f"state directory path {paths.root} is too long for a unix socket "
            "path; use a shorter MILEPOST_STATE_DIR"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    _make_dir(paths.run, None, 0o755)

    if not (paths.pg_data / "PG_VERSION").exists():
        if paths.pg_data.exists() and any(paths.pg_data.iterdir()):
            raise StackError(
                f"{paths.pg_data} is not empty but holds no PostgreSQL cluster; "
                "move it away and rerun"
            )
        _make_dir(paths.pg_data, user, 0o700)
        _open_ancestors(paths.pg_data.parent, [user], progress)
        locale = pick_locale(_locales())
        progress(
            f"initializing a PostgreSQL {major} cluster in {_display(paths.pg_data)} "
            f"(owner {user.pw_name}, locale {locale})…"
        )
        _run(
            _as_user(
                user,
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(paths.pg_data),
                    "--auth-local=trust",
                    "--auth-host=trust",
                    "-U",
                    DB_ROLE,
                    "--encoding=UTF8",
                    f"--locale={locale}",
                ],
            ),
            what="initdb",
            env=_pg_env(),
        )
    data_owner = pwd.getpwuid(paths.pg_data.stat().st_uid)
    _make_dir(paths.pg_data, data_owner, 0o700)
    _make_dir(paths.pg_run, data_owner, 0o755)
    _make_dir(paths.pg_log, data_owner, 0o750)
    _open_ancestors(paths.pg_data.parent, [data_owner], progress)

    conf = paths.pg_data / "postgresql.conf"
    include = "include = 'milepost.conf'"
    text = conf.read_text()
    if include not in text.splitlines():
        conf.write_text(text.rstrip("\n") + f"\n\n# Added by milepost.stack\n{include}\n")
    conf_changed = _write_if_changed(
        paths.pg_data / "milepost.conf",
        render_postgresql_conf(paths.root),
        mode=0o600,
        owner=(data_owner.pw_uid, data_owner.pw_gid),
    )

    pid = _postmaster_pid(paths)
    if pid is not None and conf_changed:
        progress("PostgreSQL settings changed: restarting it…")
        _pg_ctl(paths, major, "restart", "-m", "fast")
        pid = _postmaster_pid(paths)
    if pid is None:
        if _port_open(PG_PORT):
            raise StackError(
                f"{HOST}:{PG_PORT} is in use by another process (see `ss -ltnp`); stop it and rerun"
            )
        progress(f"starting PostgreSQL {major} on {HOST}:{PG_PORT}…")
        startup_log = paths.pg_log / "startup.log"
        try:
            _pg_ctl(paths, major, "start")
        except StackError as exc:
            logs = sorted(paths.pg_log.glob("postgresql-*.log"), key=lambda p: p.stat().st_mtime)
            detail = _tail(logs[-1] if logs else startup_log)
            where = _display(paths.pg_log)
            raise StackError(f"{exc}\nPostgreSQL log ({where}):\n{detail}") from exc
        pid = _postmaster_pid(paths)
        if pid is None:
            raise StackError(f"PostgreSQL did not start; see {paths.pg_log}")
    if _read_pid(paths.pg_pid) != pid:
        _write_if_changed(paths.pg_pid, f"{pid}\n")

    exists = _psql(
        paths, major, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"
    ).strip()
    if not exists:
        progress(f"creating database {DB_NAME}…")
        _psql(paths, major, "postgres", f"CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}")
    _psql(
        paths,
        major,
        DB_NAME,
        "SET client_min_messages = warning",
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
    )


# ---------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------


def _mosquitto_pid(paths: _Paths) -> int | None:
    pid = _read_pid(paths.mqtt_pid)
    if pid is None:
        return None
    cmdline = _proc_cmdline(pid)
    if cmdline and Path(cmdline[0]).name == "mosquitto" and str(paths.mqtt_conf) in cmdline:
        return pid
    return None


def _load_users(paths: _Paths) -> dict[str, list[str]]:
    try:
        data = json.loads(paths.users.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read {paths.users}: {exc}") from exc
    users = data.get("users", {}) if isinstance(data, dict) else {}
    return {str(name): [str(p) for p in patterns] for name, patterns in users.items()}


def _save_users(paths: _Paths, users: Mapping[str, Sequence[str]]) -> None:
    ordered = {name: sorted(set(users[name])) for name in sorted(users)}
    _write_if_changed(paths.users, json.dumps({"users": ordered}, indent=2) + "\n", mode=0o600)


def _passwd_users(paths: _Paths) -> set[str]:
    try:
        lines = paths.passwd.read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {line.split(":", 1)[0] for line in lines if ":" in line}


def _set_password(paths: _Paths, username: str, password: str) -> None:
    if not password or any(c in password for c in "\n\r\0"):
        raise ValueError("broker password must be non-empty and on one line")
    args = ["mosquitto_passwd", "-b", str(paths.passwd), username, password]
    if not paths.passwd.exists():
        args.insert(1, "-c")
    _run(args, what=f"mosquitto_passwd for {username}", hint="is mosquitto installed?")


def _broker_files_owner(paths: _Paths) -> tuple[int, int]:
    st = paths.mqtt.stat()
    return st.st_uid, st.st_gid


def _write_acl(paths: _Paths) -> bool:
    uid, gid = _broker_files_owner(paths)
    changed = _write_if_changed(
        paths.acl, render_acl(_load_users(paths)), mode=0o600, owner=(uid, gid)
    )
    os.chmod(paths.passwd, 0o600)
    os.chown(paths.passwd, uid, gid)
    return changed


def _reload_broker(paths: _Paths) -> None:
    pid = _mosquitto_pid(paths)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        log.info("sent SIGHUP to mosquitto (pid %d)", pid)


def _ensure_ingest_account(paths: _Paths) -> None:
    try:
        creds = json.loads(paths.credentials.read_text())
        password = str(creds["password"])
    except (OSError, ValueError, KeyError, TypeError):
        password = secrets.token_urlsafe(24)
        content = json.dumps({"username": INGEST_USER, "password": password}) + "\n"
        tmp = paths.credentials.with_name(".ingest.credentials.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.replace(tmp, paths.credentials)
        _set_password(paths, INGEST_USER, password)
    os.chmod(paths.credentials, 0o600)
    if INGEST_USER not in _passwd_users(paths):
        _set_password(paths, INGEST_USER, password)


def _stop_mosquitto(paths: _Paths, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _proc_cmdline(pid) is not None:
        time.sleep(0.05)
    if _proc_cmdline(pid) is not None:
        raise StackError(f"mosquitto (pid {pid}) did not stop within 15 s after SIGTERM")
    paths.mqtt_pid.unlink(missing_ok=True)


def _stop_broker(paths: _Paths) -> None:
    mqtt_pid = _mosquitto_pid(paths)
    if mqtt_pid is not None:
        _stop_mosquitto(paths, mqtt_pid)
        log.info("stopped mosquitto (pid %d)", mqtt_pid)
    paths.mqtt_pid.unlink(missing_ok=True)


def _ensure_mosquitto(
    paths: _Paths, fallback_user: pwd.struct_passwd, progress: Callable[[str], None],
    tls: tuple[Path, Path] | None = None,
) -> None:  # fmt: skip
    user = _broker_user(fallback_user)
    _make_dir(paths.mqtt, user, 0o755)
    _make_dir(paths.mqtt / "data", user, 0o700)
    _open_ancestors(paths.mqtt, [user], progress)

    _ensure_ingest_account(paths)
    users = _load_users(paths)
    acl_changed = _write_acl(paths)
    if not paths.users.exists():
        _save_users(paths, users)
    tls_port, certs_changed = None, False
    if tls is not None:  # the broker reads them as its own user, after dropping root
        tls_dir = paths.mqtt / "tls"
        _make_dir(tls_dir, user, 0o700)
        for source, name in zip(tls, ("cert.pem", "key.pem"), strict=True):
            certs_changed |= _write_if_changed(tls_dir / name, Path(source).read_text(),
                                               mode=0o600, owner=(user.pw_uid, user.pw_gid))
        tls_port = MQTT_TLS_PORT
    conf = render_mosquitto_conf(paths.root, user.pw_name, tls_port)
    conf_changed = _write_if_changed(paths.mqtt_conf, conf) or certs_changed
    log_file = paths.mqtt / "mosquitto.log"
    if log_file.exists():
        os.chown(log_file, user.pw_uid, user.pw_gid)

    pid = _mosquitto_pid(paths)
    if pid is not None and conf_changed:
        progress("Mosquitto settings changed: restarting it…")
        _stop_mosquitto(paths, pid)
        pid = None
    if pid is not None:
        if acl_changed:
            _reload_broker(paths)
        return
    paths.mqtt_pid.unlink(missing_ok=True)
    if _port_open(MQTT_PORT):
        raise StackError(
            f"{HOST}:{MQTT_PORT} is in use by another process (see `ss -ltnp`); stop it and rerun"
        )
    progress(f"starting Mosquitto on {HOST}:{MQTT_PORT}…")
    _run(["mosquitto", "-c", str(paths.mqtt_conf), "-d"], what="mosquitto", hint=f"see {log_file}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _mosquitto_pid(paths) is not None and _port_open(MQTT_PORT):
            return
        time.sleep(0.05)
    raise StackError(
        f"Mosquitto did not come up on {HOST}:{MQTT_PORT}; see {log_file}:\n{_tail(log_file)}"
    )


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """One ``up``/``down``/user change at a time per state directory (``make test`` and
    ``make demo`` may race)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with (paths.root / ".stack.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def up(state_dir: Path, *, progress: Callable[[str], None] = print,
       mqtt_tls: tuple[Path, Path] | None = None) -> StackInfo:  # fmt: skip
    """Provision what is missing and start PostgreSQL/TimescaleDB and Mosquitto; idempotent.
    ``mqtt_tls`` (certificate, key; PEM) adds the broker's TLS listener on MQTT_TLS_PORT."""
    paths = _paths(state_dir)
    _require_root()
    with _locked(paths):
        _install(BASE_PACKAGES, progress)
        major = _choose_pg_major(paths, progress)
        _ensure_timescaledb(paths, major, progress)
        pg_user = _pg_user()
        _ensure_postgres(paths, major, progress)
        _ensure_mosquitto(paths, pg_user, progress, mqtt_tls)
        log.info("local stack up in %s", paths.root)
        return StackInfo(
            database_url=DATABASE_URL, mqtt_url=MQTT_URL, pg_port=PG_PORT, mqtt_port=MQTT_PORT
        )


def down(state_dir: Path) -> None:
    """Stop the PostgreSQL and Mosquitto that ``up`` started (and nothing else)."""
    paths = _paths(state_dir)
    if not paths.root.exists():
        return
    _require_root()
    with _locked(paths):
        _stop_postgres(paths)
        _stop_broker(paths)


def stop_postgres(state_dir: Path) -> None:
    """Stop our PostgreSQL (fast shutdown: open sessions end at once) and wait until it
    has exited; a no-op when it is not running. ``start_postgres`` starts it again."""
    paths = _paths(state_dir)
    _require_root()
    with _locked(paths):
        _stop_postgres(paths)


def start_postgres(state_dir: Path) -> None:
    """Start our PostgreSQL (already provisioned by ``up``) and wait until it accepts
    connections; a no-op when it runs."""
    paths = _paths(state_dir)
    _require_root()
    if not (paths.pg_data / "PG_VERSION").exists():
        raise StackError(f"no PostgreSQL cluster in {paths.pg_data}; run `milepost stack up` first")
    with _locked(paths):
        major = int((paths.pg_data / "PG_VERSION").read_text().strip())
        _ensure_postgres(paths, major, lambda _msg: None)


def stop_broker(state_dir: Path) -> None:
    """Stop our Mosquitto with SIGTERM, on which it writes its persistence database
    (sessions, queued and in-flight QoS 1 messages) before it exits; waits for the exit.
    A no-op when it is not running. ``start_broker`` starts it again."""
    paths = _paths(state_dir)
    _require_root()
    with _locked(paths):
        _stop_broker(paths)


def start_broker(state_dir: Path) -> None:
    """Start our Mosquitto (already provisioned by ``up``); it reloads its persistence
    database. Waits until it listens; a no-op when it runs."""
    paths = _paths(state_dir)
    _require_root()
    if not paths.mqtt_conf.exists():
        raise StackError(f"no broker configuration in {paths.mqtt}; run `milepost stack up` first")
    with _locked(paths):
        _ensure_mosquitto(paths, _pg_user(), lambda _msg: None)


def status(state_dir: Path) -> str:
    """What runs where, one line per service; ``not running`` when neither runs."""
    paths = _paths(state_dir)
    pg_pid = _postmaster_pid(paths)
    mqtt_pid = _mosquitto_pid(paths)
    try:
        major: int | None = int((paths.pg_data / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        major = None
    if major is None:
        majors = [m for m in _installed_pg_majors() if m >= MIN_PG_MAJOR]
        major = majors[-1] if majors else None
    if major is None:
        tsdb = "timescaledb  no PostgreSQL >= 15 installed"
    else:
        version = _timescaledb_version(major)
        tsdb = (
            f"timescaledb  {version} installed for PostgreSQL {major}"
            if version
            else f"timescaledb  not installed for PostgreSQL {major}"
        )

    if pg_pid is None and mqtt_pid is None:
        return f"not running (state in {_display(paths.root)})\n{tsdb}\n"

    def line(name: str, pid: int | None, port: int, what: str) -> str:
        state = f"running  pid {pid}" if pid is not None else "stopped"
        return f"{name:<11}  {state}  {HOST}:{port}  {what}"

    return (
        "\n".join(
            [
                line("postgresql", pg_pid, PG_PORT, f"data {_display(paths.pg_data)}"),
                line("mosquitto", mqtt_pid, MQTT_PORT, f"conf {_display(paths.mqtt_conf)}"),
                tsdb,
            ]
        )
        + "\n"
    )


def add_broker_user(state_dir: Path, username: str, password: str) -> None:
    """Add or update a broker account; it may publish under ``fleet/<username>/#``."""
    paths = _paths(state_dir)
    validate_username(username)
    _require_root()
    if not paths.mqtt_conf.exists():
        raise StackError(f"no broker configuration in {paths.mqtt}; run `milepost stack up` first")
    with _locked(paths):
        _set_password(paths, username, password)
        users = _load_users(paths)
        users.setdefault(username, [])
        _save_users(paths, users)
        _write_acl(paths)
        _reload_broker(paths)


def add_broker_acl(state_dir: Path, username: str, patterns: list[str]) -> None:
    """Let a user also publish to ``patterns`` (e.g. ``owntracks/alice/#``)."""
    paths = _paths(state_dir)
    validate_username(username)
    for pattern in patterns:
        validate_topic_filter(pattern)
    _require_root()
    with _locked(paths):
        users = _load_users(paths)
        if username not in users:
            raise StackError(
                f"broker user {username!r} does not exist; add it first (`milepost devices add`)"
            )
        users[username] = sorted(set(users[username]) | set(patterns))
        _save_users(paths, users)
        if _write_acl(paths):
            _reload_broker(paths)


def ingest_credentials(state_dir: Path) -> tuple[str, str]:
    """The ingester's own broker account (username, password), created by ``up``."""
    paths = _paths(state_dir)
    try:
        creds = json.loads(paths.credentials.read_text())
        return str(creds["username"]), str(creds["password"])
    except FileNotFoundError:
        raise StackError(f"no {paths.credentials}; run `milepost stack up` first") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(f"cannot read {paths.credentials}: {exc}") from exc
