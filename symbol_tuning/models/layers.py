"""Building blocks shared by every model family (t5x layout, logical axis names).

Every parameter is float32 and carries t5x's logical axis names through
`nn.with_logical_partitioning` (`param`), so t5x-style logical->mesh rules apply.
Dense kernels are stored 2-D, as t5x's DenseGeneral stores them: attention
projections are (embed, heads*kv) and (heads*kv, embed) over a joined
'joined_kv' axis (3-D logical names fail under `jax.set_mesh`).

Here: initializers, `param`, `constrain`, Dense (optional bias), RMSNorm (T5's
scale-only layer norm; Gemma's (1 + scale) form by `scale_offset`), Embed,
GatedMlp (GeGLU / SwiGLU) and boolean attention masks (causal, segment, sliding
window). A family's attention and position scheme (T5's relative buckets, RoPE) live in
its own `network.py`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

# Large negative bias for masked attention logits (as t5x; finite in bfloat16).
NEG_INF = -1e10

# Initializers of t5x's T5.1.1 network.
embed_init = nn.initializers.normal(stddev=1.0)
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
relpos_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}


def constrain(x: Array, axes: Sequence[Optional[str]]) -> Array:
  """Logical sharding constraint (a no-op without logical axis rules)."""
  return nn.with_logical_constraint(x, tuple(axes))


def param(module: nn.Module, name: str, init: Initializer, shape, axes):
  """A float32 parameter of `shape` with logical axis names `axes` (t5x's partitioning)."""
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)),
                      tuple(int(s) for s in shape), jnp.float32)


# -----------------------------------------------------------------------------
# Parameterised layers.
# -----------------------------------------------------------------------------
class Dense(nn.Module):
  """Linear map over the last axis with a 2-D float32 kernel; T5 has no bias, some
  decoder-only families (Qwen2's q/k/v) have one (`use_bias`, zeros-initialised)."""
  features: int
  kernel_axes: tuple[str, str]
  kernel_init: Initializer = mlp_kernel_init
  dtype: Any = jnp.float32
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = param(self, "kernel", self.kernel_init,
                   (x.shape[-1], self.features), self.kernel_axes)
    x = jnp.asarray(x, self.dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if self.use_bias:
      bias = param(self, "bias", nn.initializers.zeros, (self.features,),
                   (self.kernel_axes[1],))
      y = y + jnp.asarray(bias, self.dtype)
    return y


class RMSNorm(nn.Module):
  """x / rms(x) * (scale_offset + scale), normalised in float32, no bias.

  T5 and Llama: offset 0, scale initialised to ones; Gemma stores scale - 1 (offset 1,
  zeros). `multiply_in_float32` applies the scale before the cast to `dtype` (HF's
  decoder norms) instead of after it (t5x's LayerNorm); both agree in float32.
  """
  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  scale_offset: float = 0.0
  axis_name: str = "embed"
  multiply_in_float32: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.ones if self.scale_offset == 0.0 else nn.initializers.zeros
    scale = param(self, "scale", init, (x.shape[-1],), (self.axis_name,))
    x = jnp.asarray(x, jnp.float32)
    y = x * lax.rsqrt(jnp.mean(lax.square(x), axis=-1, keepdims=True) + self.epsilon)
    if self.scale_offset:
      scale = self.scale_offset + scale
    if self.multiply_in_float32:
      return jnp.asarray(y * scale, self.dtype)
    return jnp.asarray(y, self.dtype) * jnp.asarray(scale, self.dtype)


class Embed(nn.Module):
  """Token embedding table (vocab, embed)."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = param(self, "embedding", embed_init,
                            (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, tokens: Array) -> Array:
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"token ids must be integers, got {tokens.dtype}")
    out = jnp.take(jnp.asarray(self.embedding, self.dtype), tokens, axis=0)
    return constrain(out, ("batch", "length", "embed"))

  def attend(self, query: Array) -> Array:
    """Logits against the embedding table, in float32."""
    return jnp.dot(jnp.asarray(query, jnp.float32),
                   jnp.asarray(self.embedding, jnp.float32).T)


class GatedMlp(nn.Module):
  """wo(act(wi_0 x) * wi_1 x): GeGLU with gelu_tanh (T5 v1.1, Gemma), SwiGLU with silu.

  Dropout (broadcast over the length axis) falls on the hidden units (t5x's T5) or,
  with `dropout_on_output`, on the block's output (the decoder family's residual branch).
  """
  intermediate_dim: int
  activation: str = "gelu_tanh"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  dropout_on_output: bool = False

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    dense = functools.partial(Dense, self.intermediate_dim, ("embed", "mlp"),
                              mlp_kernel_init, self.dtype)
    h = ACTIVATIONS[self.activation](dense(name="wi_0")(x)) * dense(name="wi_1")(x)
    dropout = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))
    if not self.dropout_on_output:
      h = dropout(h, deterministic=deterministic)
    h = constrain(h, ("batch", "length", "mlp"))
    out = Dense(x.shape[-1], ("mlp", "embed"), mlp_kernel_init, self.dtype, name="wo")(h)
    return dropout(out, deterministic=deterministic) if self.dropout_on_output else out


# -----------------------------------------------------------------------------
# Masks (boolean, (batch, 1, q_len, kv_len)).
# -----------------------------------------------------------------------------
def make_attention_mask(query_input: Array, key_input: Array,
                        pairwise_fn=jnp.logical_and) -> Array:
  mask = pairwise_fn(query_input[:, :, None], key_input[:, None, :])
  return mask[:, None].astype(jnp.bool_)


def combine_masks(*masks: Optional[Array]) -> Optional[Array]:
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


def window_mask(query_index: Array, key_index: Array, window: Optional[int]) -> Optional[Array]:
  """Sliding-window overlay (batch, 1, q, k): key j visible from query i when i - j < window.

  Indices are positions in the row (or in the cache), (batch, q) and (batch, k); with the
  causal mask this is HF's sliding window (query i sees keys i - window < j <= i). E.g.
  window 2, indices [[0, 1, 2]]: query 2 sees keys 1 and 2. None for no window.
  """
  if window is None:
    return None
  return make_attention_mask(query_index, key_index, lambda q, k: q - k < window)


def make_causal_mask(tokens: Array) -> Array:
  idx = jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)
  return make_attention_mask(idx, idx, jnp.greater_equal)
