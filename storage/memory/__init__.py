"""In-process adapters: state kept in this process only (fallbacks and embedded use)."""
