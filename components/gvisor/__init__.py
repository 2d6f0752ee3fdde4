"""The gVisor host layer: pure renderers plus the GvisorHost component."""
