"""Where money lives: the pure bucket engine, the ledger port and its adapters.

Amounts everywhere in this package are integers of the ledger unit: milliseconds of AI time.
"""
