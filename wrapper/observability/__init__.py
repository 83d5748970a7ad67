"""Request ids, logs, traces and metrics."""
