"""Ingest: landing files -> bronze (typed, as received) and quarantine (with a reason), incrementally."""
