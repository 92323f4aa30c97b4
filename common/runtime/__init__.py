"""Runtimes that deliver messages to handlers: the embedded one lives here; in
the cloud, Pub/Sub push and functions-framework are the runtime."""
