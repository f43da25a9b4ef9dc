"""T5 v1.1 (Flan-T5) encoder-decoder in Flax linen with t5x's parameter layout.

Parameter tree (L = layer index), every leaf float32:

  token_embedder/embedding                               (vocab, embed)
  encoder/relpos_bias/rel_embedding                      (heads, relpos_buckets)
  encoder/layers_L/pre_attention_layer_norm/scale        (embed,)
  encoder/layers_L/attention/{query,key,value}/kernel    (embed, joined_kv)
  encoder/layers_L/attention/out/kernel                  (joined_kv, embed)
  encoder/layers_L/pre_mlp_layer_norm/scale              (embed,)
  encoder/layers_L/mlp/{wi_0,wi_1}/kernel                (embed, mlp)
  encoder/layers_L/mlp/wo/kernel                         (mlp, embed)
  encoder/encoder_norm/scale                             (embed,)
  decoder/relpos_bias/rel_embedding                      (heads, relpos_buckets)
  decoder/layers_L/{pre_self_attention_layer_norm, self_attention,
                    pre_cross_attention_layer_norm, encoder_decoder_attention,
                    pre_mlp_layer_norm, mlp}/...         (as in the encoder)
  decoder/decoder_norm/scale                             (embed,)
  decoder/logits_dense/kernel                            (embed, vocab)   [unless logits_via_embedding]

Relative-position biases: one table per stack, computed once per forward pass
and added in every layer. When `*_positions` are given (packed examples) the
buckets come from them; otherwise from the absolute indices. Both give the
same logits for packed inputs, because attention across segments is masked
and within a segment the index differences equal the position differences;
the positions path costs a per-example (batch, heads, q, k) bias tensor.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from symbol_tuning.models import layers
from symbol_tuning.models.t5.config import T5Config

Array = jax.Array


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
    table = layers.param(self, "rel_embedding", layers.relpos_init,
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
      return layers.attention_kernel_init(key, shape, dtype) / depth_scaling

    def project(name, init, x):
      y = layers.Dense(inner, ("embed", "joined_kv"), init, self.dtype, name=name)(x)
      y = y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))
      return layers.constrain(y, ("batch", "length", "heads", "kv"))

    query = project("query", query_init, inputs_q)
    key = project("key", layers.attention_kernel_init, inputs_kv)
    value = project("value", layers.attention_kernel_init, inputs_kv)

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
      attention_bias = jnp.where(mask, 0.0, layers.NEG_INF).astype(self.dtype)
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
    return layers.Dense(inputs_q.shape[-1], ("joined_kv", "embed"), layers.attention_kernel_init,
                 self.dtype, name="out")(out)


def _dropout(cfg: T5Config, broadcast: bool = True) -> nn.Dropout:
  return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,) if broadcast else ())


def _attention(cfg: T5Config, name: str) -> MultiHeadAttention:
  return MultiHeadAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.jnp_dtype,
      dropout_rate=cfg.dropout_rate, float32_logits=cfg.float32_attention_logits,
      name=name)


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
  return layers.RMSNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.jnp_dtype, name=name)


def _mlp(cfg: T5Config) -> layers.GatedMlp:
  return layers.GatedMlp(intermediate_dim=cfg.mlp_dim, activation="gelu_tanh",
                         dropout_rate=cfg.dropout_rate, dtype=cfg.jnp_dtype, name="mlp")


def _relpos(cfg: T5Config) -> RelativePositionBiases:
  return RelativePositionBiases(
      num_buckets=cfg.relative_attention_num_buckets,
      max_distance=cfg.relative_attention_max_distance,
      num_heads=cfg.num_heads, dtype=cfg.jnp_dtype, name="relpos_bias")


def _positions(tokens: Array, positions: Optional[Array]) -> Array:
  if positions is not None:
    return positions
  return jnp.arange(tokens.shape[-1], dtype=jnp.int32)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention and gated-GELU MLP, each with a residual."""
  config: T5Config

  @nn.compact
  def __call__(self, inputs, bias, mask, deterministic=True):
    cfg = self.config
    x = _norm(cfg, "pre_attention_layer_norm")(inputs)
    x = _attention(cfg, "attention")(x, x, mask, bias, deterministic=deterministic)
    x = _dropout(cfg)(x, deterministic=deterministic) + inputs
    y = _norm(cfg, "pre_mlp_layer_norm")(x)
    y = _mlp(cfg)(y, deterministic=deterministic)
    y = _dropout(cfg)(y, deterministic=deterministic) + x
    return layers.constrain(y, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """Causal self-attention, cross-attention to the encoder, MLP."""
  config: T5Config

  @nn.compact
  def __call__(self, inputs, encoded, bias, decoder_mask, encoder_decoder_mask,
               deterministic=True, decode=False):
    cfg = self.config
    x = _norm(cfg, "pre_self_attention_layer_norm")(inputs)
    x = _attention(cfg, "self_attention")(
        x, x, decoder_mask, bias, deterministic=deterministic, decode=decode)
    x = _dropout(cfg)(x, deterministic=deterministic) + inputs
    y = _norm(cfg, "pre_cross_attention_layer_norm")(x)
    y = _attention(cfg, "encoder_decoder_attention")(
        y, encoded, encoder_decoder_mask, None, deterministic=deterministic)
    y = _dropout(cfg)(y, deterministic=deterministic) + x
    z = _norm(cfg, "pre_mlp_layer_norm")(y)
    z = _mlp(cfg)(z, deterministic=deterministic)
    z = _dropout(cfg)(z, deterministic=deterministic) + y
    return layers.constrain(z, ("batch", "length", "embed"))


class Encoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, tokens, mask, positions=None, deterministic=True):
    cfg = self.config
    pos = _positions(tokens, positions)
    bias = _relpos(cfg)(pos, pos, bidirectional=True)
    x = self.embedder(tokens.astype(jnp.int32))
    x = _dropout(cfg)(x, deterministic=deterministic).astype(cfg.jnp_dtype)
    layer_cls = EncoderLayer
    if cfg.remat:
      layer_cls = nn.remat(EncoderLayer, static_argnums=(4,))
    for i in range(cfg.num_encoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, bias, mask, deterministic)
    x = _norm(cfg, "encoder_norm")(x)
    return _dropout(cfg, broadcast=False)(x, deterministic=deterministic)


class Decoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, encoded, tokens, positions=None, decoder_mask=None,
               encoder_decoder_mask=None, deterministic=True, decode=False,
               max_decode_length=None):
    cfg = self.config
    relpos = _relpos(cfg)
    cache = self.variables.get("cache", {}) if decode else {}
    first = cache.get("layers_0", {}).get("self_attention", {})
    if decode and "cached_key" in first:
      # One step of cached decoding: bias row of the current position only.
      length = first["cached_key"].shape[1]
      index = first["cache_index"]
      bias = relpos(index[None], jnp.arange(length), bidirectional=False)
    else:
      # Training / scoring, or the call that creates the decode cache (whose
      # length is that of `tokens`; `max_decode_length` is then not needed).
      if decode and max_decode_length and max_decode_length != tokens.shape[-1]:
        raise ValueError(
            f"max_decode_length={max_decode_length} but the cache-creating call got "
            f"{tokens.shape[-1]} decoder positions; pass (batch, max_decode_length) tokens")
      pos = (jnp.arange(tokens.shape[-1], dtype=jnp.int32) if decode
             else _positions(tokens, positions))
      bias = relpos(pos, pos, bidirectional=False)

    y = self.embedder(tokens.astype(jnp.int32))
    y = _dropout(cfg)(y, deterministic=deterministic).astype(cfg.jnp_dtype)
    layer_cls = DecoderLayer
    if cfg.remat and not decode:
      layer_cls = nn.remat(DecoderLayer, static_argnums=(6, 7))
    for i in range(cfg.num_decoder_layers):
      y = layer_cls(cfg, name=f"layers_{i}")(
          y, encoded, bias, decoder_mask, encoder_decoder_mask, deterministic, decode)
    y = _norm(cfg, "decoder_norm")(y)
    y = _dropout(cfg)(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      logits = self.embedder.attend(y) / jnp.sqrt(jnp.float32(cfg.d_model))
    else:
      logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"), layers.mlp_kernel_init,
                            jnp.float32, name="logits_dense")(y)
    return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Transformer(nn.Module):
  """Encoder-decoder with t5x's `Transformer` call signature; float32 logits."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype)
    self.encoder = Encoder(cfg, embedder=self.token_embedder)
    self.decoder = Decoder(cfg, embedder=self.token_embedder)

  def encode(self, encoder_input_tokens, encoder_segment_ids=None,
             encoder_positions=None, enable_dropout=True):
    """Encoder output (batch, len, embed); token id 0 is padding."""
    if encoder_input_tokens.ndim != 2:
      raise ValueError(f"encoder_input_tokens must be (batch, length), got "
                       f"{encoder_input_tokens.shape}")
    valid = encoder_input_tokens > 0
    mask = layers.make_attention_mask(valid, valid)
    if encoder_segment_ids is not None:
      mask = layers.combine_masks(mask, layers.make_attention_mask(
          encoder_segment_ids, encoder_segment_ids, jnp.equal))
    return self.encoder(encoder_input_tokens, mask, encoder_positions,
                        deterministic=not enable_dropout)

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens=None, encoder_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None,
             enable_dropout=True, decode=False, max_decode_length=None):
    """Decoder logits (batch, len, vocab) in float32.

    `decoder_target_tokens` gives the padding mask (0 = padding); None means no
    padding. With `decode=True` the 'cache' collection must be mutable: the
    first call (full-length inputs, or `max_decode_length`) creates the cache,
    later calls take one token (batch, 1) per step.
    """
    if decoder_input_tokens.ndim != 2:
      raise ValueError(f"decoder_input_tokens must be (batch, length), got "
                       f"{decoder_input_tokens.shape}")
    targets = (jnp.ones_like(decoder_input_tokens) if decoder_target_tokens is None
               else decoder_target_tokens)
    enc_valid = encoder_input_tokens > 0
    if decode:
      if encoder_segment_ids is not None or decoder_segment_ids is not None:
        raise ValueError("packed inputs (segment ids) cannot be used with decode=True")
      decoder_mask = None
      encoder_decoder_mask = layers.make_attention_mask(
          jnp.ones_like(targets, dtype=jnp.bool_), enc_valid)
    else:
      dec_valid = targets > 0
      decoder_mask = layers.combine_masks(
          layers.make_causal_mask(targets),
          layers.make_attention_mask(dec_valid, dec_valid))
      encoder_decoder_mask = layers.make_attention_mask(dec_valid, enc_valid)
      if decoder_segment_ids is not None:
        decoder_mask = layers.combine_masks(decoder_mask, layers.make_attention_mask(
            decoder_segment_ids, decoder_segment_ids, jnp.equal))
      if encoder_segment_ids is not None:
        if decoder_segment_ids is None:
          raise ValueError("encoder_segment_ids given without decoder_segment_ids")
        encoder_decoder_mask = layers.combine_masks(
            encoder_decoder_mask, layers.make_attention_mask(
                decoder_segment_ids, encoder_segment_ids, jnp.equal))
    return self.decoder(encoded, decoder_input_tokens, decoder_positions,
                        decoder_mask, encoder_decoder_mask,
                        deterministic=not enable_dropout, decode=decode,
                        max_decode_length=max_decode_length)

  def __call__(self, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens, encoder_segment_ids=None,
               decoder_segment_ids=None, encoder_positions=None,
               decoder_positions=None, *, enable_dropout=True, decode=False,
               max_decode_length=None):
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids,
                          encoder_positions, enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids,
                       decoder_segment_ids, decoder_positions,
                       enable_dropout=enable_dropout, decode=decode,
                       max_decode_length=max_decode_length)


def init_inputs(batch: int = 1, input_len: int = 8, target_len: int = 8) -> tuple:
  """Token arrays `Transformer.init` traces the parameter shapes with (any lengths do)."""
  return (jnp.ones((batch, input_len), jnp.int32),
          jnp.ones((batch, target_len), jnp.int32),
          jnp.ones((batch, target_len), jnp.int32))


MODULE = Transformer  # the family's module (ModelFamily.module)
