"""Embedder adapters (common.ports.embedder): Vertex AI, OpenAI-compatible, hashing (offline)."""
