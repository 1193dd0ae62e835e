"""Temporal workflows: they only orchestrate (deterministic code, no I/O)."""
