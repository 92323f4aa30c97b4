"""Observability: structured logs now; traces and metrics build on the same context."""
