"""Test doubles that speak real protocols (a fake Vertex AI server)."""
