"""The pure money rules (SPEC §4): bucket data, burn-down, bonuses, availability, shortfall,
expiry and rollover. Plain functions on plain data — no I/O, no clock; every adapter (SQL,
memory) loads rows, asks these functions what to do, and writes the result."""
