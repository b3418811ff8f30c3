"""The pure engine: run transitions, journal matching, timer and retry arithmetic (no I/O)."""
