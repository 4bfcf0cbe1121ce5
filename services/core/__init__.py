"""Shared core of every Harmony service: audio I/O, batching, errors, metrics and the config schema."""
