"""A RavenDB-compatible stand-in server for tests, the benchmark and the demo (see README.md)."""
