"""Whether the gateway exports traces, read from the standard OpenTelemetry variables (issue 13).

Tracing is opt-in: off unless the operator names an exporter or an OTLP endpoint.

| variable | meaning here |
| --- | --- |
| OTEL_SDK_DISABLED | `true`: no tracing whatever else is set (`false` or unset: the rest decides) |
| OTEL_TRACES_EXPORTER | comma-separated `otlp`, `console`; `none` = off. Unset: `otlp` when an endpoint below is set, else off |
| OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT | the collector (http or https URL; `/v1/traces` is appended to the first only) |
| OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL | `http/protobuf` only (the exporter installed by the `otel` extra) |
| OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES | the resource; service name default `ai-metering-gateway` |
| OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG | the SDK's samplers (default `parentbased_always_on`); the ratio samplers take an ARG in [0, 1] (default 1) |

The SDK reads these variables itself (sampler, resource, the exporter's endpoint, headers,
timeout, compression, certificates; the batch processor's `OTEL_BSP_*`): this module only
decides on/off and refuses values the SDK would silently replace by a default, so a typo is a
start-up error naming the variable instead of traces that never arrive. Source of the names and
values: the OpenTelemetry specification, "Environment Variable Specification" and "OTLP
Exporter Configuration".
"""  # noqa: E501 - a Markdown table

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.settings import SettingsError

DEFAULT_SERVICE_NAME = "ai-metering-gateway"
EXPORTERS = ("otlp", "console")
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")
OTLP_PROTOCOL = "http/protobuf"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_COMPRESSIONS = ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
_SECONDS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
_BSP_COUNTS = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Tracing is on. `exporters`: the span exporters to build from the environment (`otlp`,
    `console`; empty when a test supplies its own); `service_name`: the `service.name` to set,
    None when OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES already names one."""

    exporters: tuple[str, ...]
    service_name: str | None = DEFAULT_SERVICE_NAME


def tracing_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing configuration in `env` (the process environment, via Settings.env), or None
    when tracing is off. Empty values count as unset. Raises SettingsError naming the variable
    when a value is one the SDK would ignore or the installed exporter cannot serve."""
    def get(name: str) -> str:
        return env.get(name, "").strip()

    disabled = get("OTEL_SDK_DISABLED").lower()
    if disabled not in ("", "true", "false"):
        raise SettingsError(f"OTEL_SDK_DISABLED must be true or false, not {disabled!r}")
    if disabled == "true":
        return None
    named = get("OTEL_TRACES_EXPORTER").lower()
    if named:
        exporters = tuple(dict.fromkeys(n.strip() for n in named.split(",") if n.strip()))
        unknown = [n for n in exporters if n not in (*EXPORTERS, "none")]
        if unknown:
            raise SettingsError(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not served; "
                                f"use {', '.join(EXPORTERS)} or none")
        exporters = tuple(n for n in exporters if n != "none")
    else:
        exporters = ("otlp",) if any(get(n) for n in _ENDPOINTS) else ()
    if not exporters:
        return None
    _check(get)
    named_service = get("OTEL_SERVICE_NAME") or "service.name=" in get("OTEL_RESOURCE_ATTRIBUTES")
    return TracingConfig(exporters, None if named_service else DEFAULT_SERVICE_NAME)


def _check(get: Callable[[str], str]) -> None:
    """Refuse the values the SDK would replace by a default (it only logs a warning)."""
    for name in _ENDPOINTS:
        url = get(name)
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise SettingsError(f"{name} must be an http:// or https:// URL, not {url!r}")
    for name in _PROTOCOLS:
        value = get(name)
        if value and value != OTLP_PROTOCOL:
            raise SettingsError(f"{name}: only {OTLP_PROTOCOL} is supported, not {value!r}")
    for name in _COMPRESSIONS:
        value = get(name).lower()
        if value not in ("", "gzip", "deflate", "none"):
            raise SettingsError(f"{name} must be gzip, deflate or none, not {value!r}")
    for name in _SECONDS:
        if get(name) and not _number(get(name), lambda x: x > 0):
            raise SettingsError(f"{name} must be a positive number, not {get(name)!r}")
    for name in _BSP_COUNTS:
        if get(name) and not (get(name).isdigit() and int(get(name)) > 0):
            raise SettingsError(f"{name} must be a positive integer, not {get(name)!r}")
    sampler = get("OTEL_TRACES_SAMPLER").lower()
    if sampler and sampler not in SAMPLERS:
        raise SettingsError(f"OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, "
                            f"not {sampler!r}")
    arg = get("OTEL_TRACES_SAMPLER_ARG")
    if arg and sampler.endswith("traceidratio") and not _number(arg, lambda x: 0 <= x <= 1):
        raise SettingsError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1] for {sampler}, "
                            f"not {arg!r}")


def _number(text: str, ok: Callable[[float], bool]) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and ok(value)  # NaN is no number
