"""Temporal activities: everything that touches the outside world (files, providers, visibility)."""
