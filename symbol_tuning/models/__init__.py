"""Model families behind one interface (`base.ModelFamily`), found through `registry`.

  t5/        T5 v1.1 / Flan-T5 encoder-decoder (t5x's examples/t5 layout)
  decoder/   decoder-only LMs: Llama, Qwen2, Qwen3, Gemma by config (t5x's decoder_only layout)
  layers.py  the building blocks both use (Dense, RMSNorm, gated MLP, Embed, masks)

Each family folder has the same files (config, network, features, inference, hf, family).
Importing this package is cheap: jax and flax load when a network is first built.
"""
