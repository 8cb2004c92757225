"""Presets for synthetic radiographs (one JSON file per preset)."""
