"""Google's emulators for the cloud adapters' tests (see harness.py)."""
