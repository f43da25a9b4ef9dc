"""Decoder-only family: Llama, Qwen2, Qwen3, Gemma by config (see family.py)."""
