"""Configuration: defaults, TOML, environment overrides, errors, check-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mqttspool.config import (
    BridgeConfig,
    BrokerConfig,
    HomeAssistantConfig,
    LogConfig,
    MetricsConfig,
    Settings,
    SpoolConfig,
    TopicsConfig,
    config_path_from,
    default_device_id,
    effective_config,
    load_config,
    mask_secrets,
    to_toml,
)
from mqttspool.errors import ConfigError
from mqttspool.sensor_config import BoschConfig, SimulatedConfig
from mqttspool.validation import SECRET_MASK

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "mqttspool.toml"
SECRET = "s3cr3t-Value!"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttspool", *args],
        cwd=tmp_path,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path | None, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value


def test_defaults_without_a_file() -> None:
    s = load_config(None, {})
    assert s.device.id == default_device_id()
    assert s.broker == BrokerConfig()
    assert (s.broker.host, s.broker.port, s.broker.protocol) == ("localhost", 1883, "5")
    assert s.broker.address() == "localhost:1883"
    assert s.broker.resolved_password() is None
    assert s.topics == TopicsConfig()
    assert s.topics.prefix == "mqttspool"
    assert s.spool == SpoolConfig()
    assert (s.spool.path, s.spool.synchronous, s.spool.overflow) == (
        "mqttspool.db",
        "full",
        "drop_oldest",
    )
    assert (s.spool.max_rows, s.spool.max_age, s.spool.min_free_bytes) == (10_000_000, 0, 52428800)
    assert s.bridge == BridgeConfig()
    assert (s.bridge.max_inflight, s.bridge.live_window, s.bridge.live_first) == (500, 60, False)
    assert s.sensors == [SimulatedConfig(name="simulated", interval=10)]
    assert s.homeassistant == HomeAssistantConfig()
    assert s.metrics == MetricsConfig()
    assert s.log == LogConfig()
    assert (s.log.level, s.log.format) == ("info", "text")


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[device]
id = "edge-07"
[broker]
host = "broker.example.org"
port = 8883
protocol = "3.1.1"
password = "pw"
[broker.tls]
enabled = true
ca_file = "/etc/ca.pem"
[spool]
path = "/var/lib/s.db"
synchronous = "NORMAL"
overflow = "drop_newest"
max_age = 3600
[bridge]
live_first = true
[[sensors]]
type = "bme280"
bus = 1
address = 0x76
[[sensors]]
type = "cpu_temp"
name = "cpu"
interval = 2.5
[log]
level = "DEBUG"
""",
    )
    s = load_config(path, {})
    assert s.device.id == "edge-07"
    assert s.broker.address() == "broker.example.org:8883"
    assert s.broker.protocol == "3.1.1"
    assert s.broker.resolved_password() is not None
    assert s.broker.password.get_secret_value() == "pw"
    assert s.broker.tls.enabled is True
    assert s.broker.tls.ca_file == "/etc/ca.pem"
    assert s.spool.path == "/var/lib/s.db"
    assert s.spool.synchronous == "normal"
    assert s.spool.overflow == "drop_newest"
    assert s.spool.max_age == 3600
    assert s.bridge.live_first is True
    assert [(x.type, x.name, x.interval) for x in s.sensors] == [
        ("bme280", "bme280", 10),
        ("cpu_temp", "cpu", 2.5),
    ]
    assert s.sensors[0] == BoschConfig(type="bme280", name="bme280", bus=1, address=0x76)
    assert s.log.level == "debug"


def test_protocol_given_as_a_number(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "[broker]\nprotocol = 5\n"), {}).broker.protocol == "5"


def test_environment_beats_toml(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[device]\nid = "from-file"\n[broker]\nhost = "file-host"\nport = 1884\n'
        '[spool]\npath = "file.db"\n',
    )
    s = load_config(
        path,
        {
            "MQTTSPOOL_BROKER__HOST": "env-host",
            "MQTTSPOOL_SPOOL__PATH": "/data/env.db",
            "MQTTSPOOL_DEVICE__ID": "from-env",
        },
    )
    assert s.broker.host == "env-host"
    assert s.broker.port == 1884  # not overridden: the file's value stays
    assert s.spool.path == "/data/env.db"
    assert s.device.id == "from-env"


def test_environment_keys_are_case_insensitive_and_typed() -> None:
    s = load_config(
        None,
        {
            "mqttspool_broker__port": "8883",
            "MQTTSPOOL_BRIDGE__LIVE_FIRST": "true",
            "MQTTSPOOL_BROKER__TLS__ENABLED": "1",
        },
    )
    assert s.broker.port == 8883
    assert s.bridge.live_first is True
    assert s.broker.tls.enabled is True


def test_load_config_reads_only_the_given_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTTSPOOL_BROKER__HOST", "from-process-env")
    assert load_config(None, {}).broker.host == "localhost"
    assert load_config(None, {"MQTTSPOOL_BROKER__HOST": "given"}).broker.host == "given"
    assert load_config(None).broker.host == "from-process-env"


def test_config_path_from_cli_wins_over_env() -> None:
    assert config_path_from("a.toml", {"MQTTSPOOL_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path_from(None, {"MQTTSPOOL_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path_from(None, {"MQTTSPOOL_CONFIG": ""}) is None
    assert config_path_from(None, {}) is None


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[broker]\nhots = 'x'\n", "broker.hots"),
        ("[broker.tls]\ncolour = 1\n", "broker.tls.colour"),
        ("[brokr]\nhost = 'x'\n", "brokr"),
        ("debug = true\n", "debug"),
        ("[spool]\nmax_row = 5\n", "spool.max_row"),
    ],
)
def test_unknown_toml_key_is_an_error_naming_the_path(tmp_path: Path, text: str, path: str) -> None:
    err = _problems(_write(tmp_path, text))
    assert err.problems == [(path, "unknown key (check the spelling; see config/mqttspool.toml)")]
    assert f"{path}: unknown key" in str(err)


@pytest.mark.parametrize(
    "key",
    ["MQTTSPOOL_BROKR__HOST", "MQTTSPOOL_BROKER__HOTS", "MQTTSPOOL_BROKER__TLS__X", "MQTTSPOOL_X"],
)
def test_unknown_environment_variable_is_an_error(key: str) -> None:
    err = _problems(None, {key: "1"})
    assert err.problems == [(key, "unknown setting (check the section and key name)")]
    assert key in str(err)


def test_unrelated_environment_variables_are_ignored() -> None:
    s = load_config(None, {"MQTTSPOOL_CONFIG": "", "HOME": "/root", "MQTTSPOOLX": "1"})
    assert s.broker.host == "localhost"


@pytest.mark.parametrize(
    ("text", "path", "shown"),
    [
        ("[broker]\nport = 70000\n", "broker.port", "(got 70000)"),
        ("[broker]\nport = 'abc'\n", "broker.port", '(got "abc")'),
        ("[spool]\nsynchronous = 'off'\n", "spool.synchronous", '(got "off")'),
        ("[spool]\noverflow = 'drop_random'\n", "spool.overflow", '(got "drop_random")'),
        ("[spool]\nmax_rows = 0\n", "spool.max_rows", "(got 0)"),
        ("[device]\nid = 'bad/name'\n", "device.id", '(got "bad/name")'),
        ("[topics]\nprefix = 'a/#'\n", "topics.prefix", '(got "a/#")'),
        ("[[sensors]]\ntype = 'bogus'\n", 'sensors.0 (name "bogus"): type', '(got "bogus")'),
        (
            "[[sensors]]\ntype = 'simulated'\ninterval = 0\n",
            'sensors.0 (name "simulated"): interval',
            "(got 0)",
        ),
    ],
)
def test_bad_value_error_shows_path_and_value(
    tmp_path: Path, text: str, path: str, shown: str
) -> None:
    err = _problems(_write(tmp_path, text))
    assert len(err.problems) == 1
    got_path, message = err.problems[0]
    assert got_path == path
    assert message.endswith(shown)
    assert f"{path}: " in str(err)
    assert str(_write(tmp_path, text)) in str(err)  # the source file is named


def test_bad_environment_value_names_the_field_and_the_variable() -> None:
    err = _problems(None, {"MQTTSPOOL_BROKER__PORT": "abc"})
    assert [p for p, _ in err.problems] == ["broker.port (MQTTSPOOL_BROKER__PORT)"]
    assert '(got "abc")' in str(err)
    assert str(err).startswith("invalid configuration (built-in defaults + environment):")


def test_a_bad_file_value_is_not_blamed_on_the_environment(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[broker]\nport = "x"\n')
    err = _problems(cfg, {"mqttspool_broker__host": ""})
    assert sorted(p for p, _ in err.problems) == [
        "broker.host (mqttspool_broker__host)",
        "broker.port",
    ]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    err = _problems(_write(tmp_path, "[broker]\nport = 0\nkeepalive = 1\n[spool]\nfoo = 1\n"))
    assert sorted(p for p, _ in err.problems) == ["broker.keepalive", "broker.port", "spool.foo"]


@pytest.mark.parametrize(
    "text",
    [
        f"[broker]\npassword = ['{SECRET}']\n",
        f"[broker]\npassword = {{ value = '{SECRET}' }}\n",
        "[broker]\npassword = 1234567\n",
    ],
)
def test_bad_password_value_is_masked(tmp_path: Path, text: str) -> None:
    err = _problems(_write(tmp_path, text))
    assert [p for p, _ in err.problems] == ["broker.password"]
    text_of_error = str(err)
    assert SECRET not in text_of_error
    assert "1234567" not in text_of_error
    assert f"(got {SECRET_MASK})" in text_of_error


def test_password_never_shown_when_another_field_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, f"[broker]\npassword = '{SECRET}'\nport = -1\n")
    err = _problems(path)
    assert SECRET not in str(err)
    assert SECRET not in repr(err.problems)


def test_cross_field_rules(tmp_path: Path) -> None:
    err = _problems(_write(tmp_path, "[broker.tls]\ncert_file = 'c.pem'\n"))
    assert err.problems[0][0] == "broker.tls"
    assert "cert_file and key_file must be set together" in err.problems[0][1]
    err = _problems(_write(tmp_path, "[bridge]\nreconnect_min = 10\nreconnect_max = 5\n"))
    assert err.problems[0][0] == "bridge"
    assert "reconnect_max must be >= reconnect_min" in err.problems[0][1]
    text = "[[sensors]]\ntype = 'simulated'\n[[sensors]]\ntype = 'simulated'\n"
    err = _problems(_write(tmp_path, text))
    assert err.problems[0][0] == "sensors"
    assert "'simulated' is used twice" in err.problems[0][1]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    err = _problems(path)
    assert err.problems == [("", f"config file {path} does not exist")]


def test_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "[broker\nhost = 1\n")
    err = _problems(path)
    assert len(err.problems) == 1
    assert err.problems[0][1].startswith(f"{path} is not valid TOML: ")
    assert "line 1" in err.problems[0][1]


def test_password_file_wins(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n", encoding="utf-8")
    s = load_config(
        None,
        {
            "MQTTSPOOL_BROKER__PASSWORD": "inline",
            "MQTTSPOOL_BROKER__PASSWORD_FILE": str(secret_file),
        },
    )
    resolved = s.broker.resolved_password()
    assert resolved is not None
    assert resolved.get_secret_value() == "from-file"


def test_effective_config_masks_the_password_and_round_trips_as_toml(tmp_path: Path) -> None:
    s = load_config(
        None,
        {"MQTTSPOOL_BROKER__PASSWORD": SECRET, "MQTTSPOOL_DEVICE__ID": "edge-01"},
    )
    data = effective_config(s)
    assert data["broker"]["password"] == SECRET_MASK
    text = to_toml(data)
    assert SECRET not in text
    assert tomllib.loads(text) == data
    again = load_config(_write(tmp_path, text), {})
    assert effective_config(again) == data
    assert again.broker.password.get_secret_value() == SECRET_MASK


def test_example_config_documents_every_key_and_equals_the_defaults() -> None:
    s = load_config(EXAMPLE, {})
    assert s == load_config(None, {})
    # Every key of the tree appears in the file, either set or (device.id,
    # the sensors block) as a commented example.
    text = EXAMPLE.read_text(encoding="utf-8")
    data = effective_config(Settings())
    for section, keys in data.items():
        if section == "sensors":
            assert "# [[sensors]]" in text
            for key in ("type", "name", "interval"):
                assert f"# {key} = " in text
            continue
        assert f"[{section}]" in text
        for key, value in keys.items():
            if isinstance(value, dict):
                assert f"[{section}.{key}]" in text
                for sub in value:
                    assert f"\n{sub} = " in text
            else:
                assert f"\n{key} = " in text or f"# {key} = " in text, f"{section}.{key}"


# ------------------------------------------------------------ via the CLI


def test_check_config_prints_toml_with_password_masked(tmp_path: Path) -> None:
    proc = _cli(
        tmp_path,
        "check-config",
        MQTTSPOOL_BROKER__PASSWORD=SECRET,
        MQTTSPOOL_DEVICE__ID="edge-01",
        MQTTSPOOL_SPOOL__PATH="x.db",
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    doc = tomllib.loads(proc.stdout)
    assert doc["broker"]["password"] == "********"
    assert doc["device"]["id"] == "edge-01"
    assert doc["spool"]["path"] == "x.db"
    assert doc["sensors"] == [
        {"type": "simulated", "name": "simulated", "interval": 10.0, "seed": 0}
    ]
    assert 'password = "********"' in proc.stdout.splitlines()
    assert not (tmp_path / "x.db").exists()  # check-config never creates the spool


def test_check_config_json(tmp_path: Path) -> None:
    path = _write(tmp_path, f"[broker]\npassword = '{SECRET}'\nhost = 'h'\n")
    proc = _cli(tmp_path, "check-config", "--json", "-c", str(path), MQTTSPOOL_DEVICE__ID="d")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout
    doc = json.loads(proc.stdout)
    expected = effective_config(load_config(path, {"MQTTSPOOL_DEVICE__ID": "d"}))
    assert doc == expected
    assert doc["broker"]["password"] == "********"
    assert doc["broker"]["host"] == "h"


def test_check_config_empty_password_is_shown_empty(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "check-config", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["broker"]["password"] == ""


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[broker]\nport = 1999\n")
    proc = _cli(tmp_path, "check-config", "--json", MQTTSPOOL_CONFIG=str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["broker"]["port"] == 1999


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["check-config"],
            {"MQTTSPOOL_BROKER__PORT": "abc"},
            "broker.port (MQTTSPOOL_BROKER__PORT): ",
        ),
        (["status"], {"MQTTSPOOL_BROKR__HOST": "x"}, "MQTTSPOOL_BROKR__HOST: unknown setting"),
        (["check-config", "-c", "missing.toml"], {}, "config file missing.toml does not exist"),
        (
            ["enqueue", "-"],
            {"MQTTSPOOL_SPOOL__OVERFLOW": "maybe"},
            "spool.overflow (MQTTSPOOL_SPOOL__OVERFLOW): ",
        ),
    ],
)
def test_config_errors_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    proc = _cli(tmp_path, *args, **env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert expected in proc.stderr
    assert proc.stderr.startswith("mqttspool: invalid configuration")
    assert not (tmp_path / "mqttspool.db").exists()


def test_cli_bad_password_exits_2_and_is_masked(tmp_path: Path) -> None:
    path = _write(tmp_path, f"[broker]\npassword = ['{SECRET}']\n")
    proc = _cli(tmp_path, "-c", str(path), "check-config")
    assert proc.returncode == 2
    assert SECRET not in proc.stderr + proc.stdout
    assert "broker.password: Input should be a valid string (got ********)" in proc.stderr


def test_example_config_via_cli(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "check-config", "--json", "-c", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == effective_config(load_config(None, {}))


def test_every_secret_is_masked_in_the_effective_config() -> None:
    data = {
        "broker": {"password": SECRET, "password_file": "/run/secrets/pw", "username": "u"},
        "extra": {"api_token": SECRET, "client_secret": "", "nested": [{"token": SECRET}]},
    }
    assert mask_secrets(data) == {
        "broker": {"password": SECRET_MASK, "password_file": "/run/secrets/pw", "username": "u"},
        "extra": {
            "api_token": SECRET_MASK,
            "client_secret": "",
            "nested": [{"token": SECRET_MASK}],
        },
    }


def test_check_config_masks_the_password_from_every_source(tmp_path: Path) -> None:
    secret_file = _write(tmp_path, f"{SECRET}-file\n", name="pw")
    path = _write(
        tmp_path, f"[broker]\npassword = '{SECRET}-toml'\npassword_file = '{secret_file}'\n"
    )
    for fmt in ([], ["--json"]):
        proc = _cli(
            tmp_path, "check-config", *fmt, "-c", str(path), MQTTSPOOL_BROKER__PASSWORD=SECRET
        )
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        doc = json.loads(proc.stdout) if fmt else tomllib.loads(proc.stdout)
        assert doc["broker"]["password"] == SECRET_MASK
        assert doc["broker"]["password_file"] == str(secret_file)
