"""Hyperparameters of the T5 v1.1 (Flan-T5) encoder-decoder.

`T5Config` is a frozen dataclass: hashable, so it can be a static argument of
`jax.jit` and an attribute of a Flax module. `to_dict`/`from_dict` give the
JSON form stored beside checkpoints (`model_config.json`), tagged with
`"architecture": "t5"` (files written before the tag existed are T5 ones).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from symbol_tuning.models.base import check_overrides, config_fields

ARCHITECTURE = "t5"
_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and numerics of a T5 v1.1 model; defaults are Flan-T5 small."""

  vocab_size: int = 32128  # rows of the embedding / logits columns (Flan-T5: 32000 pieces + 100 extra ids, padded to 32128)
  d_model: int = 512  # width of the residual stream ('embed' axis)
  num_heads: int = 6  # attention heads per attention block
  head_dim: int = 64  # width of one head; q/k/v kernels are (d_model, num_heads * head_dim)
  mlp_dim: int = 1024  # hidden width of the gated-GELU MLP (wi_0 / wi_1 / wo)
  num_encoder_layers: int = 8  # encoder blocks
  num_decoder_layers: int = 8  # decoder blocks
  dropout_rate: float = 0.1  # dropout on embeddings, attention weights, MLP hidden and residual branches
  dtype: str = "float32"  # activation dtype name, "float32" or "bfloat16"; params are always float32
  relative_attention_num_buckets: int = 32  # relative-position buckets (columns of rel_embedding)
  relative_attention_max_distance: int = 128  # distance from which all positions share the last bucket
  logits_via_embedding: bool = False  # True: logits = embed(y)^T / sqrt(d_model) (T5 v1.0 / tied); False: decoder/logits_dense (v1.1)
  layer_norm_epsilon: float = 1e-6  # epsilon of the scale-only RMS layer norm
  float32_attention_logits: bool = False  # compute q.k logits in float32 even when dtype is bfloat16
  remat: bool = False  # rematerialise every layer in the backward pass (saves memory, costs ~1/3 more compute)

  def __post_init__(self):
    if self.dtype not in _DTYPES:
      raise ValueError(
          f"T5Config.dtype must be one of {_DTYPES}, got {self.dtype!r}")
    for name in ("vocab_size", "d_model", "num_heads", "head_dim", "mlp_dim",
                 "relative_attention_num_buckets",
                 "relative_attention_max_distance"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
    for name in ("num_encoder_layers", "num_decoder_layers"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"T5Config.{name} must be an int >= 0, got {value!r}")
    if not 0.0 <= float(self.dropout_rate) < 1.0:
      raise ValueError(
          f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")

  @property
  def architecture(self) -> str:
    return ARCHITECTURE

  @property
  def inner_dim(self) -> int:
    """Width of the joined heads*kv axis."""
    return self.num_heads * self.head_dim

  @property
  def jnp_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    return jnp.dtype(self.dtype)

  def replace(self, **overrides) -> "T5Config":
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "architecture": ARCHITECTURE}

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "T5Config":
    """Builds a config from `to_dict` output; unknown keys are ignored with a warning."""
    return cls(**config_fields(cls, data))


CONFIGS: dict[str, T5Config] = {
    # For tests: a 2+2 layer model that runs in milliseconds on CPU.
    "tiny": T5Config(vocab_size=512, d_model=64, num_heads=4, head_dim=16,
                     mlp_dim=128, num_encoder_layers=2, num_decoder_layers=2),
    # Flan-T5 shapes (google/flan-t5-*; t5x flan_t5_* checkpoints).
    "small": T5Config(d_model=512, num_heads=6, head_dim=64, mlp_dim=1024,
                      num_encoder_layers=8, num_decoder_layers=8),
    "base": T5Config(d_model=768, num_heads=12, head_dim=64, mlp_dim=2048,
                     num_encoder_layers=12, num_decoder_layers=12),
    "large": T5Config(d_model=1024, num_heads=16, head_dim=64, mlp_dim=2816,
                      num_encoder_layers=24, num_decoder_layers=24),
    "xl": T5Config(d_model=2048, num_heads=32, head_dim=64, mlp_dim=5120,
                   num_encoder_layers=24, num_decoder_layers=24),
    "xxl": T5Config(d_model=4096, num_heads=64, head_dim=64, mlp_dim=10240,
                    num_encoder_layers=24, num_decoder_layers=24),
}


def config_key(name: str) -> str:
  """'flan-t5-base' / 'flan_t5_base' / 'base' -> 'base'."""
  return name.lower().removeprefix("flan-t5-").removeprefix("flan_t5_")


def get_config(name: str, **overrides) -> T5Config:
  """Returns the named config (see `CONFIGS`) with `overrides` applied."""
  key = config_key(name)
  if key not in CONFIGS:
    raise ValueError(
        f"unknown model config {name!r}; known: {', '.join(CONFIGS)}")
  config = CONFIGS[key]
  if overrides:
    check_overrides(T5Config, overrides)
    config = dataclasses.replace(config, **overrides)
  return config
