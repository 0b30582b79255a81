"""Policies (SPEC §5): the default policy file, env overrides, plans, and clear errors for bad
input naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from policies.compiled import Policy, load_policy
from policies.loader import PolicyError, PolicyIssue

DEFAULT = Path(__file__).resolve().parents[2] / "config" / "policies.yaml"

# A minimal valid policy; line numbers below are relied on by the tests.
BASE = """\
plans:
  free:
    daily_bonus_minutes: 15
catalog:
  version: "v1"
upstreams:
  up:
    base_url: https://up.example.com
    api_key_env: UP_KEY
routes:
  - operation: chat
    path: /v1/chat
    upstream: up
    meter:
      type: tokens
      prices:
        m1: { input: 1000, output: 2000 }
    estimate: { type: fixed, units: 5 }
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(paths: list[Path], env: dict[str, str] | None = None) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as exc:
        load_policy(paths, env or {})
    assert exc.value.issues, "a PolicyError must list at least one issue"
    assert str(exc.value)  # readable message
    return exc.value.issues


def only_issue(paths: list[Path], env: dict[str, str] | None = None) -> PolicyIssue:
    issues = issues_of(paths, env)
    assert len(issues) == 1, issues
    return issues[0]


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy([DEFAULT], {})


# --- the default policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "operation", "upstream"),
    [
        ("/v1/chat/completions", "chat", "openai"),
        ("/v1/responses", "responses", "openai"),
        ("/v1/embeddings", "embeddings", "openai"),
        ("/v1/images/generations", "image", "openai"),
        ("/v1/messages", "messages", "anthropic"),
    ],
)
def test_default_policy_routes_each_endpoint(
    default_policy: Policy, path: str, operation: str, upstream: str
) -> None:
    route = default_policy.match("POST", path)
    assert route is not None
    assert route.operation == operation
    assert route.upstream.name == upstream
    assert default_policy.path_known(path)


def test_default_policy_matches_nothing_else(default_policy: Policy) -> None:
    assert default_policy.match("GET", "/v1/chat/completions") is None
    assert default_policy.match("POST", "/v1/chat/completions/extra") is None
    assert default_policy.match("POST", "/v2/chat/completions") is None
    assert not default_policy.path_known("/v1/unknown")


def test_default_policy_token_routes_price_known_models_and_deny_unknown(
    default_policy: Policy,
) -> None:
    from policies.meters import UnpricedModel

    for path, model in [("/v1/chat/completions", "gpt-4o-mini"), ("/v1/responses", "gpt-5"),
                        ("/v1/embeddings", "text-embedding-3-small"),
                        ("/v1/messages", "claude-sonnet-4-20250514")]:
        route = default_policy.match("POST", path)
        assert route is not None
        route.meter.check_model(model)
        with pytest.raises(UnpricedModel):
            route.meter.check_model("no-such-model")


def test_default_policy_upstream_urls_without_env(default_policy: Policy) -> None:
    chat = default_policy.match("POST", "/v1/chat/completions")
    messages = default_policy.match("POST", "/v1/messages")
    assert chat is not None and messages is not None
    assert chat.upstream_url("/v1/chat/completions", "") == (
        "https://api.openai.com/v1/chat/completions")
    assert messages.upstream_url("/v1/messages", "") == "https://api.anthropic.com/v1/messages"
    assert chat.upstream.auth_header is None  # no credential in env: none injected


def test_openai_base_url_from_env_includes_v1() -> None:
    policy = load_policy([DEFAULT], {"OPENAI_BASE_URL": "http://localhost:8080/v1/"})
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
        route = policy.match("POST", path)
        assert route is not None
        assert route.upstream_url(path, "") == "http://localhost:8080/v1" + path[len("/v1"):]
    chat = policy.match("POST", "/v1/chat/completions")
    assert chat is not None
    assert chat.upstream_url("/v1/chat/completions", "a=1&b=2") == (
        "http://localhost:8080/v1/chat/completions?a=1&b=2")


def test_anthropic_base_url_from_env_has_no_v1() -> None:
    policy = load_policy([DEFAULT], {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9000"})
    route = policy.match("POST", "/v1/messages")
    assert route is not None
    assert route.upstream_url("/v1/messages", "") == "http://127.0.0.1:9000/v1/messages"


def test_credentials_are_injected_from_env() -> None:
    policy = load_policy(
        [DEFAULT], {"OPENAI_API_KEY": "sk-test-123", "ANTHROPIC_API_KEY": "ant-456"})
    chat = policy.match("POST", "/v1/chat/completions")
    messages = policy.match("POST", "/v1/messages")
    assert chat is not None and messages is not None
    assert chat.upstream.auth_header == ("authorization", "Bearer sk-test-123")
    assert messages.upstream.auth_header == ("x-api-key", "ant-456")
    assert ("anthropic-version", "2023-06-01") in messages.upstream.extra_headers


def test_a_base_url_env_that_is_not_a_url_is_an_error() -> None:
    issue = only_issue([DEFAULT], {"OPENAI_BASE_URL": "localhost:8080"})
    assert issue.file == str(DEFAULT)
    assert "base_url_env" in issue.field
    assert "OPENAI_BASE_URL" in issue.message


def test_free_plan_has_a_15_minute_daily_bonus_capped_at_300_minutes(
    default_policy: Policy,
) -> None:
    free = default_policy.plans["free"]
    assert free.daily_bonus == 900_000
    assert free.monthly_bonus_cap == 300 * 60_000
    assert free.welcome_bonus > 0
    assert default_policy.document.default_plan == "free"


def test_payg_plan_has_no_bonus_of_any_kind(default_policy: Policy) -> None:
    payg = default_policy.plans["payg"]
    assert (payg.daily_bonus, payg.welcome_bonus, payg.included, payg.rollover_cap) == (
        0, 0, 0, 0)
    assert payg.monthly_bonus_cap is None


def test_default_catalog_prices_everything_in_usd(default_policy: Policy) -> None:
    catalog = default_policy.document.catalog
    assert catalog.version
    assert catalog.packages and catalog.subscriptions
    assert all("USD" in item.prices for item in [*catalog.packages, *catalog.subscriptions])
    assert catalog.rollover_policy.days == 90


def test_hold_ttl_is_the_upstream_timeout_plus_the_margin(default_policy: Policy) -> None:
    route = default_policy.match("POST", "/v1/chat/completions")
    assert route is not None
    assert route.hold_ttl_s == 600 + 30


# --- small valid files -------------------------------------------------------------------------


def test_the_minimal_policy_loads(tmp_path: Path) -> None:
    policy = load_policy([write(tmp_path, "p.yaml", BASE)], {"UP_KEY": "k"})
    route = policy.match("POST", "/v1/chat")
    assert route is not None
    assert route.upstream_url("/v1/chat", "") == "https://up.example.com/v1/chat"
    assert route.upstream.auth_header == ("authorization", "Bearer k")
    assert policy.plans["free"].daily_bonus == 900_000
    assert policy.plans["free"].monthly_bonus_cap is None


def test_path_patterns_match_one_segment_per_placeholder(tmp_path: Path) -> None:
    text = BASE + """\
  - operation: get-file
    method: get
    path: /v1/files/{file_id}/content
    upstream: up
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: 1 }
"""
    policy = load_policy([write(tmp_path, "p.yaml", text)], {})
    route = policy.match("GET", "/v1/files/file-abc.1/content")
    assert route is not None and route.operation == "get-file"
    assert policy.match("GET", "/v1/files/a/b/content") is None
    assert policy.match("GET", "/v1/files//content") is None
    assert policy.match("POST", "/v1/files/x/content") is None
    assert policy.path_known("/v1/files/x/content")  # known path, other method: 405 not 404


def test_exact_paths_win_over_patterns(tmp_path: Path) -> None:
    text = BASE + """\
  - operation: by-id
    path: /v1/{name}
    upstream: up
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: 1 }
"""
    policy = load_policy([write(tmp_path, "p.yaml", text)], {})
    assert policy.match("POST", "/v1/chat").operation == "chat"  # type: ignore[union-attr]
    assert policy.match("POST", "/v1/other").operation == "by-id"  # type: ignore[union-attr]


def test_merging_files_adds_routes_and_overrides_plans(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", """\
        plans:
          free:
            daily_bonus_minutes: 5
          pro:
            included_minutes: 100
        routes:
          - operation: image
            path: /v1/images
            upstream: up
            meter: { type: fixed, units: 20000 }
            estimate: { type: fixed, units: 20000 }
        """)
    policy = load_policy([first, second], {})
    assert policy.plans["free"].daily_bonus == 5 * 60_000
    assert policy.plans["pro"].included == 100 * 60_000
    assert policy.match("POST", "/v1/chat") is not None  # first file's route kept
    image = policy.match("POST", "/v1/images")
    assert image is not None and image.meter.cost(None, None, 0) == 20000
    assert policy.sources == (str(first), str(second))


def test_errors_in_a_merged_file_name_that_file(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", """\
        routes:
          - operation: image
            path: /v1/images
            upstream: up
            meter: { type: fixed, units: -3 }
            estimate: { type: fixed, units: 1 }
        """)
    issue = only_issue([first, second])
    assert (issue.file, issue.line, issue.field) == (str(second), 5, "routes[1].meter.units")


def test_a_field_missing_in_an_overriding_file_names_that_file(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", """\
        upstreams:
          up:
            api_key_env: UP_KEY
        """)
    issue = only_issue([first, second])
    assert (issue.file, issue.line, issue.field) == (str(second), 3, "upstreams.up.base_url")


# --- invalid files: file, line and field -------------------------------------------------------


def test_an_unknown_key_in_a_route_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("    upstream: up\n",
                                                  "    upstream: up\n    fail_mdoe: allow\n"))
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (str(path), 14, "routes[0].fail_mdoe")


def test_a_negative_price_names_the_price_field(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("input: 1000", "input: -1"))
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (
        str(path), 17, "routes[0].meter.prices.m1.input")
    assert "greater than or equal to 0" in issue.message


def test_an_unknown_upstream_reference_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("upstream: up", "upstream: nowhere"))
    issue = only_issue([path])
    assert (issue.file, issue.line) == (str(path), 13)
    assert issue.field.replace("[", ".").replace("]", "") == "routes.0.upstream"
    assert "nowhere" in issue.message


def test_reference_errors_use_the_same_field_format_as_schema_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("upstream: up", "upstream: nowhere"))
    assert only_issue([path]).field == "routes[0].upstream"


def test_an_unknown_meter_type_names_the_meter(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("type: tokens", "type: tokenz"))
    issue = only_issue([path])
    assert (issue.file, issue.field) == (str(path), "routes[0].meter")
    assert issue.line in (14, 15)  # the `meter:` key or its first line
    assert "tokenz" in issue.message


def test_a_duplicate_key_names_its_second_occurrence(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace(
        "    daily_bonus_minutes: 15\n",
        "    daily_bonus_minutes: 15\n    daily_bonus_minutes: 20\n"))
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (
        str(path), 4, "plans.free.daily_bonus_minutes")
    assert "duplicate" in issue.message


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace('  version: "v1"', '  version: "v1": x'))
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (str(path), 5, "")
    assert "invalid YAML" in issue.message


def test_a_package_without_a_usd_price_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace('  version: "v1"\n', """\
  version: "v1"
  packages:
    - key: mini
      name: Mini
      minutes: 60
      prices: { EUR: 500 }
"""))
    issue = only_issue([path])
    assert issue.file == str(path)
    assert issue.field.startswith("catalog")
    assert "mini" in issue.message and "USD" in issue.message


def test_a_missing_usd_price_names_the_prices_field(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace('  version: "v1"\n', """\
  version: "v1"
  packages:
    - key: mini
      name: Mini
      minutes: 60
      prices: { EUR: 500 }
"""))
    issue = only_issue([path])
    assert (issue.line, issue.field) == (10, "catalog.packages[0].prices")


def test_a_request_estimate_on_a_duration_meter_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("""\
    meter:
      type: tokens
      prices:
        m1: { input: 1000, output: 2000 }
    estimate: { type: fixed, units: 5 }
""", """\
    meter: { type: duration }
    estimate: { type: request }
"""))
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (str(path), 11, "routes[0]")
    assert "'request' needs a 'tokens' meter" in issue.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("input: 1000", "input: -1").replace(
        "units: 5", "units: -5"))
    fields = {i.field for i in issues_of([path])}
    assert fields == {"routes[0].meter.prices.m1.input", "routes[0].estimate.units"}


def test_a_route_declared_twice_is_an_error(tmp_path: Path) -> None:
    text = BASE + """\
  - operation: chat2
    path: /v1/chat
    upstream: up
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: 1 }
"""
    issue = only_issue([write(tmp_path, "p.yaml", text)])
    assert issue.line == 20
    assert "declared twice" in issue.message


def test_an_unknown_default_plan_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "default_plan: gold\n" + BASE)
    issue = only_issue([path])
    assert (issue.file, issue.line, issue.field) == (str(path), 1, "default_plan")


def test_a_missing_file_or_no_file_is_an_error(tmp_path: Path) -> None:
    issue = only_issue([tmp_path / "absent.yaml"])
    assert issue.file == str(tmp_path / "absent.yaml")
    assert "cannot read" in issue.message
    with pytest.raises(PolicyError):
        load_policy([], {})


def test_a_document_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "- just\n- a list\n")
    issue = only_issue([path])
    assert (issue.file, issue.line) == (str(path), 1)
    assert "mapping" in issue.message
