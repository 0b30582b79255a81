"""What ops edit, as code: the policy schema, YAML loading, route matching, pricing, catalog."""
