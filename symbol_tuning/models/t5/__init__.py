"""T5 v1.1 / Flan-T5 encoder-decoder family (see family.py)."""
