"""Building blocks of the T5 v1.1 network, laid out like t5x's `examples/t5`.

Every parameter is float32 and carries t5x's logical axis names through
`nn.with_logical_partitioning`, so t5x-style logical->mesh rules apply.
Dense kernels are stored 2-D, as t5x's DenseGeneral stores them: attention
projections are (embed, heads*kv) and (heads*kv, embed) over a joined
'joined_kv' axis (3-D logical names fail under `jax.set_mesh`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Initializer = Callable[..., Array]

# Large negative bias for masked attention logits (as t5x; finite in bfloat16).
NEG_INF = -1e10

# Initializers of t5x's T5.1.1 network.
embed_init = nn.initializers.normal(stddev=1.0)
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
relpos_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def constrain(x: Array, axes: Sequence[Optional[str]]) -> Array:
  """Logical sharding constraint (a no-op without logical axis rules)."""
  return nn.with_logical_constraint(x, tuple(axes))


def _param(module: nn.Module, name: str, init: Initializer, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)),
                      tuple(int(s) for s in shape), jnp.float32)


# -----------------------------------------------------------------------------
# Relative position buckets.
# -----------------------------------------------------------------------------
def relative_position_bucket(relative_position, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucketing of `memory_position - query_position` (numpy, float32 logs).

  Small distances get their own bucket; larger ones share log-spaced buckets;
  everything at or beyond `max_distance` falls into the last bucket. With
  `bidirectional` half of the buckets are for keys after the query; otherwise
  keys after the query all map to bucket 0.
  """
  rel = np.asarray(relative_position, dtype=np.int64)
  distance = -rel  # how far back the key is
  offset = np.zeros_like(distance)
  if bidirectional:
    num_buckets //= 2
    offset = np.where(distance < 0, num_buckets, 0)
    distance = np.abs(distance)
  else:
    distance = np.maximum(distance, 0)
  max_exact = num_buckets // 2
  # Same float32 arithmetic as t5x / HF (the eps only guards log(0) for the
  # small distances, which the `where` below discards).
  scaled = (np.log(distance.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact) * (num_buckets - max_exact))
  large = np.minimum(max_exact + scaled.astype(np.int32), num_buckets - 1)
  return (offset + np.where(distance < max_exact, distance, large)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _bucket_table(bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket of every relative position in [-max_distance, max_distance].

  Buckets are constant beyond +-max_distance, so clipping a relative position
  into this range and looking it up gives exactly `relative_position_bucket`.
  """
  rel = np.arange(-max_distance, max_distance + 1)
  return relative_position_bucket(rel, bidirectional, num_buckets, max_distance)


class RelativePositionBiases(nn.Module):
  """Per-head learned bias of attention logits by relative-position bucket.

  One table (heads, buckets) per stack, at `<stack>/relpos_bias/rel_embedding`,
  shared by every layer of the stack.
  """
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array,
               bidirectional: bool) -> Array:
    """Returns a (batch or 1, heads, q_len, k_len) bias.

    Args:
      query_positions: int (batch, q_len) or (q_len,) positions of the queries.
      key_positions: int (batch, k_len) or (k_len,) positions of the keys.
      bidirectional: encoder (True) or causal decoder (False) bucketing.
    """
    table = _param(self, "rel_embedding", relpos_init,
                   (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    q = jnp.asarray(query_positions, jnp.int32)
    k = jnp.asarray(key_positions, jnp.int32)
    if q.ndim == 1:
      q = q[None]
    if k.ndim == 1:
      k = k[None]
    rel = k[:, None, :] - q[:, :, None]  # (batch, q, k): memory - query
    lookup = jnp.asarray(_bucket_table(bidirectional, self.num_buckets,
                                       self.max_distance))
    buckets = lookup[jnp.clip(rel, -self.max_distance, self.max_distance)
                     + self.max_distance]
    # (buckets, heads)[(b, q, k)] -> (b, q, k, heads) -> (b, heads, q, k)
    values = jnp.take(table.T.astype(self.dtype), buckets, axis=0)
    return jnp.transpose(values, (0, 3, 1, 2))


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
    kernel = _param(self, "kernel", self.kernel_init,
                    (x.shape[-1], self.features), self.kernel_axes)
    x = jnp.asarray(x, self.dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if self.use_bias:
      bias = _param(self, "bias", nn.initializers.zeros, (self.features,),
                    (self.kernel_axes[1],))
      y = y + jnp.asarray(bias, self.dtype)
    return y


class LayerNorm(nn.Module):
  """T5 layer norm: RMS normalisation (in float32) with a scale, no bias."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.asarray(x, jnp.float32)
    mean2 = jnp.mean(lax.square(x), axis=-1, keepdims=True)
    y = jnp.asarray(x * lax.rsqrt(mean2 + self.epsilon), self.dtype)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    return y * jnp.asarray(scale, self.dtype)


class Embed(nn.Module):
  """Token embedding table (vocab, embed)."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = _param(self, "embedding", embed_init,
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


class MlpBlock(nn.Module):
  """Gated-GELU feed-forward: wo(gelu(wi_0 x) * wi_1 x), tanh-approximate GELU."""
  intermediate_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    dense = functools.partial(Dense, self.intermediate_dim, ("embed", "mlp"),
                              mlp_kernel_init, self.dtype)
    h = jax.nn.gelu(dense(name="wi_0")(x), approximate=True) * dense(name="wi_1")(x)
    h = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
        h, deterministic=deterministic)
    h = constrain(h, ("batch", "length", "mlp"))
    return Dense(x.shape[-1], ("mlp", "embed"), mlp_kernel_init, self.dtype,
                 name="wo")(h)


class MultiHeadAttention(nn.Module):
  """T5 multi-head dot-product attention (no logit scaling, no biases).

  1/sqrt(head_dim) is folded into the query initializer, as in t5x. With
  `decode=True` the keys/values are kept in the 'cache' collection
  (`cached_key`, `cached_value`: (batch, max_len, heads, head_dim), and
  `cache_index`): the first call (no cache yet) only creates it; later calls
  take one query position at a time.
  """
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  float32_logits: bool = False

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array,
               mask: Optional[Array] = None, bias: Optional[Array] = None, *,
               decode: bool = False, deterministic: bool = True) -> Array:
    """Args: inputs (batch, len, embed); boolean `mask` and additive `bias`
    broadcastable to (batch, heads, q_len, kv_len)."""
    inner = self.num_heads * self.head_dim
    depth_scaling = float(np.sqrt(self.head_dim))

    def query_init(key, shape, dtype=jnp.float32):
      return attention_kernel_init(key, shape, dtype) / depth_scaling

    def project(name, init, x):
      y = Dense(inner, ("embed", "joined_kv"), init, self.dtype, name=name)(x)
      y = y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))
      return constrain(y, ("batch", "length", "heads", "kv"))

    query = project("query", query_init, inputs_q)
    key = project("key", attention_kernel_init, inputs_kv)
    value = project("value", attention_kernel_init, inputs_kv)

    if decode:
      initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                   value.shape, value.dtype)
      cache_index = self.variable("cache", "cache_index",
                                  lambda: jnp.array(0, dtype=jnp.int32))
      if initialized:
        batch, length, heads, depth = cached_key.value.shape
        if query.shape != (batch, 1, heads, depth):
          raise ValueError(
              "autoregressive cache: expected one query position of shape "
              f"{(batch, 1, heads, depth)}, got {query.shape}")
        index = cache_index.value
        key = lax.dynamic_update_slice(cached_key.value,
                                       key.astype(cached_key.value.dtype),
                                       (0, index, 0, 0))
        value = lax.dynamic_update_slice(cached_value.value,
                                         value.astype(cached_value.value.dtype),
                                         (0, index, 0, 0))
        cached_key.value = key
        cached_value.value = value
        cache_index.value = index + 1
        # The query may only see the positions filled so far.
        seen = (jnp.arange(length) <= index)[None, None, None, :]
        mask = seen if mask is None else jnp.logical_and(mask, seen)
        if bias is not None and bias.shape[-2] != 1:
          bias = lax.dynamic_slice_in_dim(bias, index, 1, axis=-2)

    attention_bias = None
    if mask is not None:
      attention_bias = jnp.where(mask, 0.0, NEG_INF).astype(self.dtype)
    if bias is not None:
      bias = bias.astype(self.dtype)
      attention_bias = bias if attention_bias is None else attention_bias + bias

    if self.float32_logits:
      query = query.astype(jnp.float32)
      key = key.astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    if attention_bias is not None:
      logits = logits + attention_bias.astype(logits.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(self.dtype)
    # T5 drops whole query rows' worth of a key: broadcast over the query axis.
    weights = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
        weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(self.dtype))
    out = out.reshape(out.shape[:-2] + (inner,))
    return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), attention_kernel_init,
                 self.dtype, name="out")(out)


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


def make_causal_mask(tokens: Array) -> Array:
  idx = jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32), tokens.shape)
  return make_attention_mask(idx, idx, jnp.greater_equal)
