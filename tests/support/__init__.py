"""What the test tiers share: paths and caches, the loopback HTTP server, the release
mirror, the busybox test image, OCI image archives, the socat forwarder, SSH with
retry and waiting.

Plain modules, no fixtures and no tests: each tier's conftest.py makes its
fixtures from these.
"""
