"""Sluice: a serverless, event-driven document pipeline for Google Cloud."""

__version__ = "0.1.0"
