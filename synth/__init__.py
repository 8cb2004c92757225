"""Synthetic radiographs (DRRs) from CT with labels in the same geometry.

Not implemented yet: see the synth issue.  May import ts2d_xray's core (labels, io,
projection); ts2d_xray never imports synth except lazily from the CLI.
"""
