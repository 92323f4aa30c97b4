"""The functional core: pure models and decisions. Nothing here does I/O."""
