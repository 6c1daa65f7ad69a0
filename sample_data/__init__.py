"""Deterministic generators of the sample county: satellite pairs, truth, grids, UAV clip,
competition flights. ``tuban sample --out DIR`` writes them; nothing here is hand-made data.
"""
