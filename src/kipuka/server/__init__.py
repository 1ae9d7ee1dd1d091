"""Running the listeners: TLS context, worker processes, reload and graceful stop."""
