"""Hyperparameters of the decoder-only transformer (Llama, Mistral, Qwen2/3, Gemma 1/2/3 by
config).

`DecoderConfig` is a frozen, hashable dataclass like every family's config, so it can be a
static argument of `jax.jit` and an attribute of a Flax module. The RoPE scaling
options are kept as a sorted tuple of (key, value) pairs for hashability;
`to_dict` / `from_dict` give them back as a dict (the `model_config.json` form,
tagged with `"architecture": "decoder_only"`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Mapping, Optional

import numpy as np

from symbol_tuning.models import rope
from symbol_tuning.models.base import check_overrides, config_fields

ARCHITECTURE = "decoder_only"
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
# Families whose blocks also norm each branch's output (Gemma 2/3's sandwich norms).
POST_NORM_FAMILIES = ("gemma2", "gemma3_text")
LAYER_TYPES = ("full_attention", "sliding_attention")  # HF's names
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")
ROPE_TYPES = rope.ROPE_TYPES
_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and numerics of a decoder-only LM; defaults are a Llama-style layout."""

  family: str = "llama"  # HF model_type written on export: one of FAMILIES
  vocab_size: int = 32000  # rows of the embedding / logits columns
  d_model: int = 512  # width of the residual stream ('embed' axis)
  num_heads: int = 8  # query heads
  num_kv_heads: int = 8  # key/value heads (grouped-query attention when < num_heads)
  head_dim: int = 64  # width of one head
  mlp_dim: int = 1376  # hidden width of the gated MLP (wi_0 = gate, wi_1 = up, wo = down)
  num_layers: int = 8  # decoder blocks
  activation: str = "silu"  # gate activation: silu (SwiGLU), gelu_tanh / gelu (GeGLU)
  norm_epsilon: float = 1e-6  # epsilon of the RMS norms
  norm_scale_offset: float = 0.0  # RMSNorm multiplies by (offset + scale): Gemma stores scale - 1
  embed_scale: bool = False  # multiply embeddings by sqrt(d_model) (Gemma)
  tie_embeddings: bool = False  # logits from the embedding table (no logits_dense)
  qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2; Llama attention_bias)
  out_bias: bool = False  # bias on the attention output projection (Llama attention_bias)
  qk_norm: bool = False  # RMS norm of each query/key head before RoPE (Qwen3, Gemma3)
  rope_theta: float = 10000.0  # RoPE base wavelength
  rope_scaling: tuple = ()  # sorted (key, value) pairs; key 'rope_type' in ROPE_TYPES
  local_rope_theta: Optional[float] = None  # RoPE base of the sliding-window layers, unscaled
  #   (Gemma 3's local layers); None: every layer uses rope_theta and rope_scaling
  query_pre_attn_scalar: Optional[float] = None  # attention scale is this**-0.5 (default head_dim)
  attn_logit_softcap: Optional[float] = None  # cap * tanh(logits / cap) on attention logits
  final_logit_softcap: Optional[float] = None  # cap * tanh(logits / cap) on output logits
  sliding_window: Optional[int] = None  # query i sees keys i - window < j <= i (Mistral)
  layer_types: tuple = ()  # per layer, in LAYER_TYPES; () = every layer windowed if a window
  #   (Gemma 2: () = its alternation, sliding first)
  post_norms: Optional[bool] = None  # norm each branch's output before its residual add
  #   (Gemma 2's post-attention and post-feedforward norms); None: the family's default
  max_position_embeddings: int = 2048  # context length the checkpoint was trained for
  bos_token_id: Optional[int] = None  # tokenizer facts kept for export
  eos_token_id: Any = None  # int, or a tuple of ints
  pad_token_id: Optional[int] = None
  dropout_rate: float = 0.0  # dropout on the attention and MLP residual branches
  dtype: str = "float32"  # activation dtype; params are always float32
  remat: bool = False  # rematerialise every layer in the backward pass

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"DecoderConfig.family must be one of {FAMILIES}, got {self.family!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"DecoderConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.dtype not in _DTYPES:
      raise ValueError(f"DecoderConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
    for name in ("vocab_size", "d_model", "num_heads", "num_kv_heads", "head_dim",
                 "mlp_dim", "num_layers", "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"DecoderConfig.{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"DecoderConfig.num_heads ({self.num_heads}) must be a multiple of "
                       f"num_kv_heads ({self.num_kv_heads})")
    if self.head_dim % 2:
      raise ValueError(f"DecoderConfig.head_dim must be even for RoPE, got {self.head_dim}")
    if not 0.0 <= float(self.dropout_rate) < 1.0:
      raise ValueError(f"DecoderConfig.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
    if isinstance(self.eos_token_id, list):  # Llama 3 lists several
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    window = self.sliding_window
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window <= 0):
      raise ValueError(f"DecoderConfig.sliding_window must be a positive int or None, "
                       f"got {window!r}")
    object.__setattr__(self, "layer_types", tuple(self.layer_types))
    if self.post_norms is None:
      object.__setattr__(self, "post_norms", self.family in POST_NORM_FAMILIES)
    if self.family in GEMMA_PATTERNS and window is not None and not self.layer_types:
      object.__setattr__(self, "layer_types",
                         gemma_layer_types(self.num_layers, GEMMA_PATTERNS[self.family]))
    if self.layer_types and (len(self.layer_types) != self.num_layers
                             or not set(self.layer_types) <= set(LAYER_TYPES)):
      raise ValueError(f"DecoderConfig.layer_types must give one of {LAYER_TYPES} for each "
                       f"of the {self.num_layers} layers, got {self.layer_types!r}")
    if "sliding_attention" in self.layer_types and window is None:
      raise ValueError("DecoderConfig.layer_types has sliding_attention layers but "
                       "sliding_window is None")
    if isinstance(self.rope_scaling, Mapping):  # accept a dict, store it hashable
      object.__setattr__(self, "rope_scaling", _freeze(self.rope_scaling))
    theta = self.rope_theta
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or not 0 < theta < math.inf:
      raise ValueError(f"DecoderConfig.rope_theta must be a positive number, got {theta!r}")
    problem = rope.scaling_problem(dict(self.rope_scaling))
    if problem:
      raise ValueError(f"DecoderConfig.rope_scaling: {problem}")

  @property
  def architecture(self) -> str:
    return ARCHITECTURE

  @property
  def jnp_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    return jnp.dtype(self.dtype)

  @property
  def attention_scale(self) -> float:
    return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def layer_window(self, layer: int) -> Optional[int]:
    """The attention window of layer `layer` (None: the whole causal context)."""
    if self.layer_types and self.layer_types[layer] == "full_attention":
      return None
    return self.sliding_window

  def replace(self, **overrides) -> "DecoderConfig":
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    data = dataclasses.asdict(self)
    data["rope_scaling"] = dict(self.rope_scaling)
    data["layer_types"] = list(self.layer_types)
    data["architecture"] = ARCHITECTURE
    return data

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "DecoderConfig":
    """Builds a config from `to_dict` output; unknown keys are ignored with a warning."""
    return cls(**config_fields(cls, data))


# Every n-th layer is global (full attention), the others local: transformers' defaults.
GEMMA_PATTERNS = {"gemma2": 2, "gemma3_text": 6}


def gemma_layer_types(num_layers: int, pattern: int) -> tuple:
  """Gemma's local/global layers: (3, 2) -> (sliding, full, sliding)."""
  return tuple("sliding_attention" if (i + 1) % pattern else "full_attention"
               for i in range(num_layers))


def _freeze(mapping: Mapping[str, Any]) -> tuple:
  """{'factor': 8.0, 'rope_type': 'llama3'} -> (('factor', 8.0), ('rope_type', 'llama3'))."""
  return tuple(sorted((str(k), v) for k, v in mapping.items() if v is not None))


@functools.lru_cache(maxsize=64)
def rope_frequencies(config: DecoderConfig, local: bool = False) -> tuple[np.ndarray, float]:
  """(inverse frequencies (head_dim // 2,) float32, cos/sin multiplier), as HF computes them.

  Supports HF's 'default', 'linear', 'llama3' and 'yarn'; bit-equal to transformers'
  (see `rope.py`: float32 pow the way torch evaluates it). `local`: a sliding-window
  layer's, which differ where `local_rope_theta` is set (default RoPE at that base).
  """
  theta, scaling = config.rope_theta, dict(config.rope_scaling)
  if local and config.local_rope_theta is not None:
    theta, scaling = config.local_rope_theta, {}
  inv_freq, factor = rope.inverse_frequencies(config.head_dim, theta, scaling,
                                              config.max_position_embeddings)
  inv_freq.flags.writeable = False  # shared by every caller through the cache
  return inv_freq, factor


# The shape shared by the ~100M configs (vocabulary at the tasks' size, not the families').
_100M = dict(vocab_size=32000, d_model=768, num_heads=12, num_kv_heads=4, head_dim=64,
             mlp_dim=2048, num_layers=10)
# What every Gemma generation shares.
_GEMMA = dict(activation="gelu_tanh", norm_scale_offset=1.0, embed_scale=True,
              tie_embeddings=True)

CONFIGS: dict[str, DecoderConfig] = {
    # For tests: 2 layers, grouped-query attention, runs in milliseconds on CPU.
    "llama-tiny": DecoderConfig(vocab_size=512, d_model=64, num_heads=4, num_kv_heads=2,
                                head_dim=16, mlp_dim=128, num_layers=2),
    # Mistral's layout at test size: every layer attends to the last 4 positions.
    "mistral-tiny": DecoderConfig(family="mistral", vocab_size=512, d_model=64, num_heads=4,
                                  num_kv_heads=2, head_dim=16, mlp_dim=128, num_layers=2,
                                  sliding_window=4),
    # Gemma 2's layout at test size: local (window 4) and global layers, sandwich norms,
    # soft-capped attention and output logits.
    "gemma2-tiny": DecoderConfig(family="gemma2", vocab_size=512, d_model=64, num_heads=4,
                                 num_kv_heads=2, head_dim=16, mlp_dim=128, num_layers=2,
                                 activation="gelu_tanh", norm_scale_offset=1.0,
                                 embed_scale=True, tie_embeddings=True, sliding_window=4,
                                 query_pre_attn_scalar=16.0, attn_logit_softcap=50.0,
                                 final_logit_softcap=30.0),
    # Gemma 3's layout at test size: QK-norm, local layers (window 4, RoPE base 10,000)
    # and a global one (base 1,000,000, linear scaling) in 3.
    "gemma3-tiny": DecoderConfig(family="gemma3_text", vocab_size=512, d_model=64,
                                 num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
                                 num_layers=3, activation="gelu_tanh", norm_scale_offset=1.0,
                                 embed_scale=True, tie_embeddings=True, qk_norm=True,
                                 sliding_window=4, layer_types=(
                                     "sliding_attention", "sliding_attention",
                                     "full_attention"),
                                 query_pre_attn_scalar=16.0, rope_theta=1_000_000.0,
                                 rope_scaling={"rope_type": "linear", "factor": 8.0},
                                 local_rope_theta=10_000.0),
    # ~100M-parameter configs, one per architecture (benchmarks/train_step.py): one width and
    # depth (_100M) so their step times compare, each with its architecture's own features.
    # Windows are 256, half the benchmark's 512-token rows, so local layers mask real keys.
    "llama-100m": DecoderConfig(**_100M),
    "mistral-100m": DecoderConfig(family="mistral", sliding_window=256, **_100M),
    # Qwen2: biases on q/k/v, RoPE base 1,000,000.
    "qwen2-100m": DecoderConfig(family="qwen2", qkv_bias=True, rope_theta=1_000_000.0, **_100M),
    # Qwen3: QK-norm instead of the biases.
    "qwen3-100m": DecoderConfig(family="qwen3", qk_norm=True, rope_theta=1_000_000.0, **_100M),
    # Gemma 1-3 tie the head to the embedding (so ~25M fewer parameters), use GeGLU, scale
    # embeddings by sqrt(d_model) and store norm scales - 1.
    "gemma-100m": DecoderConfig(family="gemma", **_GEMMA, **_100M),
    # Gemma 2: local and global layers alternating, sandwich norms, soft-capped logits.
    "gemma2-100m": DecoderConfig(family="gemma2", sliding_window=256, query_pre_attn_scalar=64.0,
                                 attn_logit_softcap=50.0, final_logit_softcap=30.0,
                                 **_GEMMA, **_100M),
    # Gemma 3 (as its 1B): five local layers per global one, QK-norm, sandwich norms, RoPE
    # base 10,000 on local layers and 1,000,000 on global ones.
    "gemma3-100m": DecoderConfig(family="gemma3_text", sliding_window=256, qk_norm=True,
                                 query_pre_attn_scalar=64.0, rope_theta=1_000_000.0,
                                 local_rope_theta=10_000.0, **_GEMMA, **_100M),
}


# Architecture -> its ~100M config: {'llama': 'llama-100m', 'gemma2': 'gemma2-100m', ...}.
ARCH_100M = {name.removesuffix("-100m"): name for name in CONFIGS if name.endswith("-100m")}


def get_config(name: str, **overrides) -> DecoderConfig:
  """Returns the named config (see `CONFIGS`) with `overrides` applied."""
  if name not in CONFIGS:
    raise ValueError(f"unknown decoder-only config {name!r}; known: {', '.join(CONFIGS)}")
  check_overrides(DecoderConfig, overrides)
  base = CONFIGS[name]
  if "num_layers" in overrides and "layer_types" not in overrides and base.layer_types:
    pattern = GEMMA_PATTERNS.get(base.family)
    if pattern and base.layer_types == gemma_layer_types(base.num_layers, pattern):
      overrides = dict(overrides, layer_types=())  # the family's pattern, at the new depth
    else:
      raise ValueError(f"decoder-only config {name!r} sets layer_types for its "
                       f"{base.num_layers} layers; with num_layers, pass layer_types too")
  return base.replace(**overrides) if overrides else base
