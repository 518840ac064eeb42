"""The paper's coarse-to-fine study: train A, seed D and E from it, compare arms over seeds.

- `study`: the presets, arms and runner (`scripts/coarse_to_fine.py`).
- `multiseed`: many seeds of one arm trained at once with `vmap`.
- `report`: results.json, the tables and the plot.
"""
