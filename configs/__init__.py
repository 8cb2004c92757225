"""Configuration data shipped with ts2d_xray (label catalog, presets)."""
