"""Pure tests for the parsing and rendering helpers of milepost.stack (no machine needed).

Mirror URIs here use file: paths and documentation IP addresses on purpose: no host name
of a real mirror belongs in the repository (the stack reads it from the machine).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from milepost import stack
from milepost.stack import AptSource, Distro, Mirror

BOOKWORM = Distro(family="debian", codename="bookworm")
NOBLE = Distro(family="ubuntu", codename="noble")

# The shape of Debian 12's /etc/apt/sources.list.d/debian.sources (cloud images), with a
# comment inside a stanza and a disabled stanza added.
DEBIAN_SOURCES = """\
Types: deb
# http://192.0.2.7/archive/debian/20250520T000000Z
URIs: file:///srv/mirror/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: file:///srv/mirror/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: file:///srv/other/debian
Suites: bookworm
Components: main contrib
Enabled: no
"""

EMBEDDED_KEY = """\
Types: deb
URIs: mirror+file:/etc/apt/mirrors/debian.list
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPJLhN7YwI4XwBz6sZRdYhsp
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# deb file:///srv/commented/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] file:///srv/mirror/debian bookworm main contrib # c
deb [ arch=amd64 ] file:///srv/mirror/debian-security bookworm-security main
deb-src file:///srv/mirror/debian bookworm main
deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_]/ bookworm main

garbage line
"""


# --- deb822 -----------------------------------------------------------------


def test_deb822_parses_stanzas_and_skips_comment_lines() -> None:
    sources = stack.parse_deb822_sources(DEBIAN_SOURCES)
    assert len(sources) == 3
    first = sources[0]
    assert first.types == ("deb",)
    assert first.uris == ("file:///srv/mirror/debian",)
    assert first.suites == ("bookworm", "bookworm-updates")
    assert first.components == ("main",)
    assert first.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert first.enabled
    assert sources[1].suites == ("bookworm-security",)


def test_deb822_enabled_no_is_disabled() -> None:
    third = stack.parse_deb822_sources(DEBIAN_SOURCES)[2]
    assert third.types == ("deb", "deb-src")
    assert not third.enabled


def test_deb822_multiline_signed_by_keeps_the_key_block() -> None:
    (src,) = stack.parse_deb822_sources(EMBEDDED_KEY)
    assert src.signed_by is not None
    lines = src.signed_by.split("\n")
    assert lines[0] == "-----BEGIN PGP PUBLIC KEY BLOCK-----"
    assert lines[1] == ""  # the " ." line
    assert lines[-1] == "-----END PGP PUBLIC KEY BLOCK-----"


def test_deb822_field_names_are_case_insensitive_and_blank_text_is_empty() -> None:
    (src,) = stack.parse_deb822_sources("types: deb\nuris: file:///m/debian\nsuites: trixie\n")
    assert src.uris == ("file:///m/debian",)
    assert stack.parse_deb822_sources("\n\n# only a comment\n") == []


# --- one-line format ----------------------------------------------------------


def test_one_line_parses_options_and_ignores_comments() -> None:
    sources = stack.parse_one_line_sources(ONE_LINE)
    assert [s.types for s in sources] == [("deb",), ("deb",), ("deb-src",), ("deb",)]
    first = sources[0]
    assert first.uris == ("file:///srv/mirror/debian",)
    assert first.suites == ("bookworm",)
    assert first.components == ("main", "contrib")
    assert first.signed_by == "/k.gpg"
    assert sources[1].signed_by is None
    assert sources[1].suites == ("bookworm-security",)
    assert all("commented" not in s.uris[0] for s in sources)


# --- archive names and mirror selection ------------------------------------------


@pytest.mark.parametrize(
    ("uri", "archive"),
    [
        ("file:///srv/mirror/debian", "debian"),
        ("http://192.0.2.1/debian/", "debian"),
        ("http://192.0.2.1/debian-security", "debian-security"),
        ("http://192.0.2.1/archive/debian/20250520T000000Z", "debian"),
        ("http://192.0.2.1/archive/debian-security/20250520T000000Z", "debian-security"),
        ("mirror+file:/etc/apt/mirrors/debian.list", "debian"),
        ("mirror+file:/etc/apt/mirrors/debian-security.list", "debian-security"),
        ("http://192.0.2.1/ubuntu/", "ubuntu"),
        ("http://192.0.2.1/ubuntu-ports", "ubuntu-ports"),
        ("http://192.0.2.1/node_20.x", None),
        ("cdrom:[Debian GNU/Linux 12]/debian", None),
    ],
)
def test_uri_archive(uri: str, archive: str | None) -> None:
    assert stack.uri_archive(uri) == archive


def test_select_mirror_picks_the_main_archive_for_the_codename() -> None:
    sources = stack.parse_deb822_sources(DEBIAN_SOURCES)
    assert stack.select_mirror(sources, BOOKWORM) == Mirror(
        uri="file:///srv/mirror/debian",
        signed_by="/usr/share/keyrings/debian-archive-keyring.gpg",
    )


def test_select_mirror_skips_security_disabled_and_other_codenames() -> None:
    sources = [
        AptSource(("deb",), ("file:///a/debian",), ("bookworm",), ("main",), enabled=False),
        AptSource(("deb",), ("file:///b/debian-security",), ("bookworm",), ("main",)),
        AptSource(("deb",), ("file:///c/debian",), ("bullseye",), ("main",)),
        AptSource(("deb",), ("file:///d/node",), ("bookworm",), ("main",)),
        AptSource(("deb",), ("file:///e/debian",), ("bookworm-updates",), ("main",)),
    ]
    assert stack.select_mirror(sources, BOOKWORM) is None
    good = AptSource(("deb",), ("file:///f/debian",), ("bookworm",), ("main",))
    assert stack.select_mirror([*sources, good], BOOKWORM) == Mirror("file:///f/debian", None)


def test_select_mirror_from_one_line_sources_skips_cdrom() -> None:
    mirror = stack.select_mirror(stack.parse_one_line_sources(ONE_LINE), BOOKWORM)
    assert mirror is not None
    assert mirror.uri == "file:///srv/mirror/debian"


def test_select_mirror_ubuntu() -> None:
    sources = [
        AptSource(("deb",), ("http://192.0.2.2/ubuntu/",), ("noble-security",), ("main",)),
        AptSource(("deb",), ("http://192.0.2.1/ubuntu/",), ("noble", "noble-updates"), ("main",)),
    ]
    assert stack.select_mirror(sources, NOBLE) == Mirror("http://192.0.2.1/ubuntu/", None)
    assert stack.select_mirror(sources, BOOKWORM) is None


# --- distribution and next release -----------------------------------------------


def test_os_release_and_next_codename() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
    fields = stack.parse_os_release(text)
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    distro = stack.distro_from_os_release(fields)
    assert distro == BOOKWORM
    assert stack.source_suite(distro) == "trixie"
    assert stack.source_components(distro) == ("main",)


@pytest.mark.parametrize(
    ("codename", "following"),
    [("bullseye", "bookworm"), ("bookworm", "trixie"), ("trixie", "forky")],
)
def test_next_debian_table(codename: str, following: str) -> None:
    assert stack.source_suite(Distro("debian", codename)) == following


def test_unknown_debian_codename_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(stack.StackError, match=r"timescaledb\.control"):
        stack.source_suite(Distro("debian", "hamm"))


def test_ubuntu_uses_its_own_codename() -> None:
    fields = stack.parse_os_release(
        "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n"
    )
    distro = stack.distro_from_os_release(fields)
    assert distro == NOBLE
    assert stack.source_suite(distro) == "noble"
    assert stack.source_components(distro) == ("main", "universe")


def test_other_systems_are_refused() -> None:
    with pytest.raises(stack.StackError, match="MILEPOST_DATABASE_URL"):
        stack.distro_from_os_release({"ID": "fedora", "VERSION_CODENAME": ""})


# --- the temporary deb-src list ------------------------------------------------------


def test_render_deb_src_round_trips_through_the_parser() -> None:
    (src,) = stack.parse_deb822_sources(EMBEDDED_KEY)
    mirror = Mirror(uri=src.uris[0], signed_by=src.signed_by)
    text = stack.render_deb_src(mirror, "trixie", ("main",))
    (back,) = stack.parse_deb822_sources(text)
    assert back.types == ("deb-src",)
    assert back.uris == src.uris
    assert back.suites == ("trixie",)
    assert back.components == ("main",)
    assert back.signed_by == src.signed_by


def test_render_deb_src_without_signed_by() -> None:
    text = stack.render_deb_src(Mirror("file:///m/debian", None), "trixie", ("main",))
    assert "Signed-By" not in text
    assert text.startswith("Types: deb-src\n")


# --- versions, locale, permissions ------------------------------------------------------


def test_dsc_field_and_upstream_version() -> None:
    dsc = "-----BEGIN PGP SIGNED MESSAGE-----\n\nFormat: 3.0 (quilt)\n"
    dsc += "Version: 2.19.3+dfsg-1+deb13u1\n"
    version = stack.dsc_field(dsc, "Version")
    assert version == "2.19.3+dfsg-1+deb13u1"
    assert stack.upstream_version(version) == "2.19.3"
    assert stack.upstream_version("1:2.13.0~rc1-2") == "2.13.0"
    assert stack.dsc_field(dsc, "Source") is None


def test_pick_locale() -> None:
    assert stack.pick_locale(["C", "C.utf8", "POSIX"]) == "C.UTF-8"
    assert stack.pick_locale(["C.UTF-8"]) == "C.UTF-8"
    assert stack.pick_locale(["C", "POSIX", "en_US.utf8"]) == "C"


def test_can_search_follows_owner_then_group_then_other() -> None:
    d700 = stat.S_IFDIR | 0o700
    assert stack.can_search(d700, 0, 0, 0, [0])  # root
    assert not stack.can_search(d700, 0, 0, 101, [104])
    assert stack.can_search(d700 | stat.S_IXOTH, 0, 0, 101, [104])
    assert stack.can_search(d700, 101, 104, 101, [104])  # owner
    # the owner bits decide for the owner, even when "other" could search
    assert not stack.can_search(stat.S_IFDIR | 0o071, 101, 104, 101, [104])
    assert stack.can_search(stat.S_IFDIR | 0o710, 0, 104, 101, [104])  # group


# --- broker ACL and configs -----------------------------------------------------------


def test_render_acl_ingester_reads_only_and_vehicles_write_their_own_tree() -> None:
    acl = stack.render_acl({"VAN-2": [], "VAN-1": ["owntracks/alice/#", "owntracks/alice/#"]})
    blocks = [b.strip().splitlines() for b in acl.split("\n\n")]
    ingest = next(b for b in blocks if "user milepost-ingest" in b)
    assert [line for line in ingest if not line.startswith("#")] == [
        "user milepost-ingest",
        "topic read #",
    ]
    assert ["user VAN-1", "topic write fleet/VAN-1/#", "topic write owntracks/alice/#"] in blocks
    assert ["user VAN-2", "topic write fleet/VAN-2/#"] in blocks
    # a pattern would apply to the ingester too
    assert "pattern" not in [line.split()[0] for line in acl.splitlines() if line.strip()]
    assert acl.index("user VAN-1") < acl.index("user VAN-2")


def test_render_acl_is_deterministic() -> None:
    a = stack.render_acl({"B": ["x/#", "a/#"], "A": []})
    b = stack.render_acl({"A": [], "B": ["a/#", "x/#"]})
    assert a == b
    assert stack.render_acl({}).endswith("\n")


def test_render_acl_never_lets_the_ingest_account_write() -> None:
    acl = stack.render_acl({stack.INGEST_USER: ["fleet/#"]})
    assert "write" not in acl.replace("publishes nothing", "")


def test_validate_username_and_topic_filter() -> None:
    assert stack.validate_username("VAN-0042") == "VAN-0042"
    for bad in ("", "a b", "x/y", "a#", "+", "a:b", "x" * 65, stack.INGEST_USER):
        with pytest.raises(ValueError):
            stack.validate_username(bad)
    assert stack.validate_topic_filter("owntracks/alice/#") == "owntracks/alice/#"
    assert stack.validate_topic_filter("a/+/b") == "a/+/b"
    for bad in ("", "a/#/b", "a/b#", "a+/b", "a b", "a\nb"):
        with pytest.raises(ValueError):
            stack.validate_topic_filter(bad)


def test_render_mosquitto_conf() -> None:
    conf = stack.render_mosquitto_conf(Path("/srv/var"), "mosquitto").splitlines()
    for line in (
        "listener 18830 127.0.0.1",
        "allow_anonymous false",
        "password_file /srv/var/mqtt/passwd",
        "acl_file /srv/var/mqtt/acl",
        "persistence true",
        "persistence_location /srv/var/mqtt/data/",
        "max_queued_messages 1000000",
        "max_inflight_messages 1000",
        "max_queued_bytes 0",
        "persistent_client_expiration 7d",
        "log_dest file /srv/var/mqtt/mosquitto.log",
        "pid_file /srv/var/mqtt/mosquitto.pid",
        "user mosquitto",
    ):
        assert line in conf


def test_render_postgresql_conf() -> None:
    conf = stack.render_postgresql_conf(Path("/srv/var"))
    settings = dict(
        line.split(" = ", 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["listen_addresses"] == "'127.0.0.1'"
    assert settings["port"] == "55432"
    assert settings["unix_socket_directories"] == "'/srv/var/pg-run'"
    assert settings["shared_preload_libraries"] == "'timescaledb'"
    assert settings["timescaledb.telemetry_level"] == "off"
    assert settings["shared_buffers"] == "1GB"
    assert settings["synchronous_commit"] == "on"
    assert settings["log_directory"] == "'/srv/var/pg-log'"


def test_urls_and_ports() -> None:
    assert stack.DATABASE_URL == "postgresql://milepost@127.0.0.1:55432/milepost"
    assert stack.MQTT_URL == "mqtt://127.0.0.1:18830"
    assert (stack.PG_PORT, stack.MQTT_PORT) == (55432, 18830)
