"""The gvisor-fleet policy pack: pure rules (rules.py), their CrossGuard wiring (pack.py)."""
