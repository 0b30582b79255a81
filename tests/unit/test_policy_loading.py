"""Which policy a gateway loads when none is named, and that loading reports every problem of a
policy in one pass (YAML, schema and cross-reference errors together, in file and line order)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings
from policies import PACKAGED_POLICY
from policies.compiled import load_policy
from policies.loader import PolicyError

REPO = Path(__file__).resolve().parents[2]
WORKED_EXAMPLE = REPO / "config" / "policies.yaml"


def test_the_packaged_default_policy_is_the_worked_example() -> None:
    # One policy file: config/policies.yaml (what the README documents) is a symlink to the
    # packaged copy an installed gateway runs.
    assert WORKED_EXAMPLE.resolve() == PACKAGED_POLICY.resolve()
    assert load_policy([PACKAGED_POLICY], {}).routes


def test_without_a_policy_setting_a_directory_without_config_uses_the_packaged_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).policy_paths == (PACKAGED_POLICY,)
    assert Settings().policy_paths == (PACKAGED_POLICY,)


def test_without_a_policy_setting_a_local_config_policies_yaml_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policies.yaml").write_text("plans: {}\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).policy_paths == (Path("config/policies.yaml"),)


def test_gateway_policy_path_wins_over_both_defaults(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policies.yaml").write_text("plans: {}\n")
    monkeypatch.chdir(tmp_path)
    env = {"GATEWAY_POLICY_PATH": "/etc/a.yaml, b.yaml"}
    assert Settings.from_env(env).policy_paths == (Path("/etc/a.yaml"), Path("b.yaml"))


BROKEN = """\
default_plan: gold
plans:
  free:
    daily_bonus_minutes: -1
    daily_bonus_minutes: 5
catalog:
  version: "v1"
  subscriptions:
    - { key: s1, name: S, minutes: 10, prices: { USD: 100 }, plan: platinum }
upstreams:
  up:
    base_url: https://up.example.com
    base_url_env: UP_URL
routes:
  - operation: chat
    path: /v1/chat
    upstream: nowhere
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: -5 }
  - operation: chat2
    method: post
    path: /v1/chat
    upstream: up
    meter: { type: fixed, units: 1 }
    estimate: { type: fixed, units: 1 }
"""


def test_schema_and_reference_errors_are_reported_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PolicyError) as exc:
        load_policy([path], {"UP_URL": "not a url"})
    assert [(i.line, i.field) for i in exc.value.issues] == [
        (1, "default_plan"),                        # reference: no such plan
        (5, "plans.free.daily_bonus_minutes"),      # YAML: duplicate key (the later value is kept)
        (9, "catalog.subscriptions[0].plan"),       # reference: no such plan
        (13, "upstreams.up.base_url_env"),          # environment: not a URL
        (17, "routes[0].upstream"),                 # reference: no such upstream
        (19, "routes[0].estimate.units"),           # schema: negative
        (22, "routes[1].path"),                     # reference: POST /v1/chat twice
    ]
    assert all(i.file == str(path) for i in exc.value.issues)


def test_a_valid_document_with_a_bad_reference_reports_only_that(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BROKEN.replace("default_plan: gold", "default_plan: free")
                    .replace("    daily_bonus_minutes: -1\n", "")
                    .replace("plan: platinum", "plan: free").replace("units: -5", "units: 5")
                    .replace("path: /v1/chat\n    upstream: up",
                             "path: /v1/chat2\n    upstream: up"))
    with pytest.raises(PolicyError) as exc:
        load_policy([path], {})
    assert [(i.line, i.field, i.message) for i in exc.value.issues] == [
        (16, "routes[0].upstream", "unknown upstream 'nowhere'")]
