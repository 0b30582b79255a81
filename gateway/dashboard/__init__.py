"""The dashboard (issue 12): the account pages at /dashboard and the operator console at /admin,
served by the gateway, built on its public billing and admin API."""
