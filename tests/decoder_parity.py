"""Tiny random transformers models of every decoder-only HF family and our logits beside
theirs: shared by tests/test_checkpoints.py (parity < 1e-4) and benchmarks/hf_parity.py
(the README's parity table), so the table comes from the tests' own code.

    models, tokens = decoder_parity.make_models(tmp_dir)   # one torch process
    short, long = decoder_parity.max_differences(models["mistral"], tokens)

transformers runs in a torch-only child process (hf_reference.py); the tokens are
scored twice there and here: at positions 0..23 ("short") and LONG_START..LONG_START+23
("long", through position_ids), every windowed family's window shorter than the row.
"""
import pathlib

import numpy as np

import hf_reference

_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2)
# One tiny model per HF model_type, each exercising that family's options.
DECODER_HF = {
    "llama": dict(_COMMON, head_dim=16, attention_bias=True, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 16}),
    # Every layer windowed (5 < the 24 tokens).
    "mistral": dict(_COMMON, head_dim=16, sliding_window=5, rope_theta=1000000.0),
    # use_sliding_window: layer 1 (from max_window_layers) windowed, layer 0 full.
    "qwen2": dict(_COMMON, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0,
                  rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                "original_max_position_embeddings": 8},
                  use_sliding_window=True, sliding_window=6, max_window_layers=1),
    "qwen3": dict(_COMMON, head_dim=16, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "gemma": dict(_COMMON, head_dim=32, hidden_act="gelu_pytorch_tanh"),  # heads*head_dim != hidden
    # Layer 0 local (window 5), layer 1 global; caps small enough to bind on random weights.
    "gemma2": dict(_COMMON, head_dim=16, sliding_window=5, query_pre_attn_scalar=24,
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
    # Layers 0-1 local (window 5, RoPE base 10,000), layer 2 global (base 1e6, linear x8).
    "gemma3_text": dict(_COMMON, num_hidden_layers=3, head_dim=16, sliding_window=5,
                        query_pre_attn_scalar=24, sliding_window_pattern=3,
                        rope_parameters={"full_attention": {"rope_type": "linear",
                                                            "factor": 8.0,
                                                            "rope_theta": 1_000_000.0},
                                         "sliding_attention": {"rope_type": "default",
                                                               "rope_theta": 10_000.0}}),
}
SHARDED = {"qwen2"}  # saved with a small max_shard_size: exercises the index file
LENGTH = 24
LONG_START = 20_000  # where RoPE's float32 rounding shows (issue #23)


def positions(long: bool) -> np.ndarray:
  start = LONG_START if long else 0
  return np.broadcast_to(np.arange(start, start + LENGTH, dtype=np.int32), (2, LENGTH))


def make_models(folder) -> tuple[dict, np.ndarray]:
  """Saves a random model per family under `folder`: ({family: (dir, {"short": logits,
  "long": logits})}, tokens (2, LENGTH))."""
  folder = pathlib.Path(folder)
  tokens = np.random.default_rng(0).integers(0, 128, size=(2, LENGTH)).astype(np.int32)
  jobs = [{"name": fam, "dir": str(folder / fam), "model_type": fam, "config": cfg,
           "shard": fam in SHARDED} for fam, cfg in DECODER_HF.items()]
  out = hf_reference.run("hf_reference:decoder_logits",
                         {"tokens": tokens, "long_positions": positions(True)}, jobs=jobs)
  return {fam: (folder / fam, {"short": out[fam], "long": out[f"{fam}/long"]})
          for fam in DECODER_HF}, tokens


def our_logits(config, params, tokens, long: bool = False) -> np.ndarray:
  """Our network's float32 logits of `tokens` at the short or long positions."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from symbol_tuning.models.decoder import network  # pylint: disable=g-import-not-at-top
  model = network.DecoderOnlyTransformer(config)
  return np.asarray(model.apply({"params": params}, jnp.asarray(tokens),
                                decoder_positions=jnp.asarray(positions(long)),
                                enable_dropout=False))


def max_differences(model, tokens) -> dict[str, float]:
  """{"short": , "long": } max |ours - transformers'| of a `make_models` entry, loaded by
  our HF reader."""
  from symbol_tuning.checkpoints import load_hf  # pylint: disable=g-import-not-at-top
  path, reference = model
  config, params = load_hf(str(path))
  return {kind: float(np.abs(our_logits(config, params, tokens, kind == "long")
                             - reference[kind]).max()) for kind in ("short", "long")}
