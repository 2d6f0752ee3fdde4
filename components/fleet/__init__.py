"""Machines for the host layer: one module per backend, one record out."""
