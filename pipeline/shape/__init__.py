"""Shaping rows: packing into best-fit bins and striding into overlapping windows. Knows nothing of Beam."""
