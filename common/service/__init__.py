"""The service layer: handlers over typed messages and ports (the imperative shell)."""
