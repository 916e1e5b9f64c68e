"""Pure renderers: resolved entries -> files for each target, lossless or refuse (see base.py)."""
