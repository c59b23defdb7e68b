"""Inspection of built modules: parameter tables, per-layer summaries, module trees, forward runs; tensor files."""
