"""The process edge: server assembly, command line, listeners, health, metrics, auth and TLS."""
