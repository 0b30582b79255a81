"""What ops edit, as code: the policy schema, YAML loading, route matching, pricing, catalog."""

from pathlib import Path

# The policy an installed gateway falls back to when no policy file is given and there is no
# ./config/policies.yaml: package data, kept identical to the worked example config/policies.yaml
# (tests/unit/test_policies.py checks that they are the same file).
PACKAGED_POLICY = Path(__file__).resolve().with_name("default.yaml")
