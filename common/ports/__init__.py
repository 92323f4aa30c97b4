"""Ports: the small interfaces between Sluice's core and the outside world.

Each port has a local (embedded) adapter under ``common.adapters.local`` and a
Google Cloud adapter under ``common.adapters.gcp``; one contract test suite
runs against both.
"""
