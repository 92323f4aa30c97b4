"""Contract tests: one behaviour suite per port, run against every backend."""
