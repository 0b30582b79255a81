"""Tracing is opt-in through the standard OTEL_* variables (gateway.tracing_config): off unless
an exporter or an OTLP endpoint is named; values the SDK would silently replace by a default
are start-up errors naming the variable."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError
from gateway.tracing_config import DEFAULT_SERVICE_NAME, TracingConfig, tracing_config

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


@pytest.mark.parametrize("env", [
    {},
    {"OTEL_SERVICE_NAME": "gw", "OTEL_TRACES_SAMPLER": "always_on"},  # nothing exports
    {"OTEL_TRACES_EXPORTER": "none", **ENDPOINT},
    {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    {"OTEL_SDK_DISABLED": "TRUE", **ENDPOINT},
    {"OTEL_TRACES_EXPORTER": "", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},  # empty counts as unset
])
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_named(env: dict[str, str]) -> None:
    assert tracing_config(env) is None


def test_an_otlp_endpoint_alone_turns_on_otlp_export() -> None:
    assert tracing_config(ENDPOINT) == TracingConfig(("otlp",), DEFAULT_SERVICE_NAME)
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example/v1/traces"}
    assert tracing_config(traces_only) == TracingConfig(("otlp",), DEFAULT_SERVICE_NAME)


def test_exporters_are_read_as_a_list_without_none_or_repeats() -> None:
    config = tracing_config({"OTEL_TRACES_EXPORTER": " Console, otlp,none,console",
                             "OTEL_SDK_DISABLED": "false"})
    assert config is not None and config.exporters == ("console", "otlp")


def test_the_service_name_defaults_unless_the_environment_names_one() -> None:
    on = {"OTEL_TRACES_EXPORTER": "console"}
    assert tracing_config({**on, "OTEL_SERVICE_NAME": "edge"}) == TracingConfig(("console",),
                                                                              None)
    named = tracing_config({**on, "OTEL_RESOURCE_ATTRIBUTES": "env=prod,service.name=edge"})
    assert named is not None and named.service_name is None
    other = tracing_config({**on, "OTEL_RESOURCE_ATTRIBUTES": "env=prod"})
    assert other is not None and other.service_name == DEFAULT_SERVICE_NAME


def test_valid_sampler_settings_pass() -> None:
    for sampler, arg in [("parentbased_traceidratio", "0.25"), ("traceidratio", "1"),
                         ("always_off", ""), ("traceidratio", "")]:
        assert tracing_config({**ENDPOINT, "OTEL_TRACES_SAMPLER": sampler,
                               "OTEL_TRACES_SAMPLER_ARG": arg}) is not None


@pytest.mark.parametrize(("env", "variable"), [
    ({"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED"),
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1"},
     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
    ({**ENDPOINT, "OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "OTEL_TRACES_SAMPLER_ARG"),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
      "OTEL_TRACES_SAMPLER_ARG": "nan"}, "OTEL_TRACES_SAMPLER_ARG"),
])
def test_a_value_the_sdk_would_ignore_is_a_startup_error_naming_it(
        env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        tracing_config(env)


def test_serve_refuses_a_bad_otel_value_before_starting(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from gateway.cli import main

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    assert main(["serve", "--port", "1"]) == 2
    assert "OTEL_TRACES_EXPORTER" in capsys.readouterr().err
