"""The billing, payments and admin HTTP API (Starlette routes) and its edge helpers."""
