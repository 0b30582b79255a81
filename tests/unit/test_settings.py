"""Deployment settings: read from the environment only by `Settings.from_env`, with one default
and one bound per variable, and errors that name the variable (the CLI exits 2 with them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import Settings, SettingsError

SECRET = "s" * 32


def test_an_empty_environment_gives_the_same_settings_as_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().port == 8080 and Settings().max_body_bytes == 1_048_576
    assert Settings().checkout_success_url == "http://localhost:8080/billing/success"


def test_settings_built_from_values_never_read_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    assert Settings().port == 8080
    assert Settings(port=9000).port == 9000
    assert Settings.from_env().port == 9100


def test_only_the_documented_variables_are_read_and_empty_means_unset() -> None:
    settings = Settings.from_env({"port": "1", "host": "x", "GATEWAY_ENV": "{}",
                                  "GATEWAY_HOST": "", "STRIPE_SECRET_KEY": ""})
    assert (settings.port, settings.host, settings.stripe_secret_key) == (8080, "127.0.0.1", None)


def test_values_are_parsed_from_their_variables() -> None:
    settings = Settings.from_env({
        "GATEWAY_DATABASE_URL": "postgresql://db/gw", "GATEWAY_POLICY_PATH": "/a.yaml, b.yaml",
        "GATEWAY_LOG_LEVEL": "DEBUG", "GATEWAY_HMAC_KEYS": f"k1:{SECRET}, k2:{SECRET}",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com/", "STRIPE_API_BASE": "http://mock:12111/",
        "GATEWAY_EVENT_HISTORY_S": "60", "GATEWAY_UNBILLED_PATH": "/var/spool.jsonl"})
    assert settings.database_url == "postgresql+asyncpg://db/gw"
    assert settings.policy_paths == (Path("/a.yaml"), Path("b.yaml"))
    assert settings.log_level == "debug"
    assert dict(settings.hmac_keys) == {"k1": SECRET, "k2": SECRET}
    assert settings.checkout_success_url == "https://gw.example.com/billing/success"
    assert settings.checkout_cancel_url == "https://gw.example.com/billing/cancel"
    assert settings.stripe_api_base == "http://mock:12111"
    assert settings.event_history_s == 60
    assert settings.unbilled_path == Path("/var/spool.jsonl")


def test_the_whole_environment_is_kept_for_the_policy_upstreams_and_survives_overrides() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-up", "GATEWAY_PORT": "9000"})
    assert settings.env["OPENAI_API_KEY"] == "sk-up"
    assert settings.db_pool_size == 20
    assert Settings.from_env({"GATEWAY_DB_POOL_SIZE": "8"}).db_pool_size == 8
    overridden = settings.with_overrides(port=9001)
    assert overridden.port == 9001 and overridden.env["OPENAI_API_KEY"] == "sk-up"
    assert Settings().env == {}


@pytest.mark.parametrize(("env", "message"), [
    ({"GATEWAY_PORT": "80a"}, "GATEWAY_PORT='80a' is not an integer"),
    ({"GATEWAY_PORT": "0"}, "GATEWAY_PORT=0 is outside 1..65535"),
    ({"GATEWAY_KEY_CACHE_TTL_S": "3601"}, "GATEWAY_KEY_CACHE_TTL_S=3601 is outside 0..3600"),
    ({"GATEWAY_EVENT_HISTORY_S": "59"}, "GATEWAY_EVENT_HISTORY_S=59 is outside 60..7776000"),
    ({"GATEWAY_MAX_BODY_BYTES": "1023"},
     "GATEWAY_MAX_BODY_BYTES=1023 is outside 1024..67108864"),
    ({"GATEWAY_DB_POOL_SIZE": "0"}, "GATEWAY_DB_POOL_SIZE=0 is outside 1..500"),
    ({"GATEWAY_LOG_LEVEL": "Loud"},
     "GATEWAY_LOG_LEVEL='loud': use debug, info, warning or error"),
    ({"GATEWAY_DATABASE_URL": "mysql://x"},
     "GATEWAY_DATABASE_URL='mysql://x': expected sqlite:///PATH or postgresql+asyncpg://…"),
    ({"GATEWAY_REDIS_URL": "localhost:6379"},
     "GATEWAY_REDIS_URL='localhost:6379': expected redis://HOST:PORT/DB"),
    ({"STRIPE_API_BASE": "ftp://x"}, "STRIPE_API_BASE='ftp://x' is not an http(s) URL"),
    ({"GATEWAY_CHECKOUT_CANCEL_URL": "/cancel"},
     "GATEWAY_CHECKOUT_CANCEL_URL='/cancel' is not an http(s) URL"),
    ({"GATEWAY_ADMIN_TOKEN": "short"}, "GATEWAY_ADMIN_TOKEN must be at least 32 characters"),
    ({"GATEWAY_HMAC_KEYS": "k1:short"},
     "GATEWAY_HMAC_KEYS: each entry is 'id:secret' with a secret of at least 32 characters"),
])
def test_an_invalid_value_is_an_error_naming_the_variable(env: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message


def test_every_invalid_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"GATEWAY_PORT": "x", "GATEWAY_STREAM_POLL_S": "0"})
    assert str(raised.value) == ("GATEWAY_PORT='x' is not an integer; "
                                 "GATEWAY_STREAM_POLL_S=0 is outside 1..300")


def test_an_invalid_override_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"^GATEWAY_PORT=70000 is outside 1\.\.65535$"):
        Settings().with_overrides(port=70_000)


def test_the_cli_exits_2_with_one_line_naming_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GATEWAY_MAINTENANCE_S", "often")
    assert main(["migrate"]) == 2
    assert capsys.readouterr().err == \
        "gateway: error: GATEWAY_MAINTENANCE_S='often' is not an integer\n"
