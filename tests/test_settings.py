from pathlib import Path

import pytest

from milepost.settings import SettingsError, load_settings


def test_defaults_point_at_the_local_stack() -> None:
    s = load_settings({})
    assert s.database_url == "postgresql://milepost@127.0.0.1:55432/milepost"
    assert s.mqtt_url == "mqtt://127.0.0.1:18830"
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8000)
    assert s.state_dir == Path("var")
    assert s.webhook_allow_private is False


def test_environment_overrides_and_is_typed() -> None:
    s = load_settings({"MILEPOST_API_ADDR": "0.0.0.0:9001", "MILEPOST_BATCH_MAX_ROWS": "77",
                       "MILEPOST_WEBHOOK_ALLOW_PRIVATE": "true"})
    assert s.api_port == 9001
    assert s.batch_max_rows == 77
    assert s.webhook_allow_private is True


def test_unknown_key_is_named() -> None:
    with pytest.raises(SettingsError, match="MILEPOST_DATABSE_URL"):
        load_settings({"MILEPOST_DATABSE_URL": "postgresql://x"})


def test_bad_value_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="MILEPOST_MQTT_URL"):
        load_settings({"MILEPOST_MQTT_URL": "http://broker"})
    with pytest.raises(SettingsError, match="MILEPOST_BATCH_MAX_ROWS"):
        load_settings({"MILEPOST_BATCH_MAX_ROWS": "0"})


def test_toml_file_and_env_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "milepost.toml"
    cfg.write_text('api_addr = "127.0.0.1:8100"\nbatch_max_ms = 50\n')
    s = load_settings({"MILEPOST_CONFIG": str(cfg), "MILEPOST_BATCH_MAX_MS": "75"})
    assert s.api_port == 8100
    assert s.batch_max_ms == 75


def test_unknown_key_in_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "milepost.toml"
    cfg.write_text('api_adr = "127.0.0.1:8100"\n')
    with pytest.raises(SettingsError, match="api_adr"):
        load_settings({"MILEPOST_CONFIG": str(cfg)})
