"""Decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3 / Gemma 1-3 by config), Flax linen.

Parameter tree in t5x's `examples/decoder_only` layout (L = layer index), every
leaf float32 with logical axis names:

  decoder/token_embedder/embedding                          (vocab, embed)
  decoder/layers_L/pre_self_attention_layer_norm/scale      (embed,)
  decoder/layers_L/self_attention/query/kernel              (embed, joined_kv)  heads*head_dim
  decoder/layers_L/self_attention/{key,value}/kernel        (embed, joined_kv)  kv_heads*head_dim
  decoder/layers_L/self_attention/{query,key,value}/bias    (joined_kv,)        [qkv_bias]
  decoder/layers_L/self_attention/{query,key}_norm/scale    (kv,)               [qk_norm]
  decoder/layers_L/self_attention/out/kernel                (joined_kv, embed)
  decoder/layers_L/self_attention/out/bias                  (embed,)            [out_bias]
  decoder/layers_L/post_self_attention_layer_norm/scale     (embed,)            [post_norms]
  decoder/layers_L/pre_mlp_layer_norm/scale                 (embed,)
  decoder/layers_L/post_mlp_layer_norm/scale                (embed,)            [post_norms]
  decoder/layers_L/mlp/{wi_0,wi_1}/kernel                   (embed, mlp)        gate, up
  decoder/layers_L/mlp/wo/kernel                            (mlp, embed)        down
  decoder/decoder_norm/scale                                (embed,)
  decoder/logits_dense/kernel                               (embed, vocab)      [not tie_embeddings]

Norm scales are stored as the checkpoint stores them; the norm multiplies by
`norm_scale_offset + scale` (Gemma's RMSNorm is x * (1 + w)).

Masking: causal, within a segment when `decoder_segment_ids` are given, and
bidirectional over the prefix marked by `decoder_causal_attention` (prefix LM).
A layer with a window (`DecoderConfig.layer_window`: Mistral's every layer, Qwen2's
upper layers with use_sliding_window, Gemma 2/3's local layers) also masks keys `window`
or more positions back, in the full pass and in the cache alike. Its KV cache holds at
most `window` positions, a ring indexed by cache index mod window (`window_cache_step`);
full-attention layers cache every position (`full_cache_step`).
Token id 0 is NOT treated as padding (it is a real token in Qwen's
vocabulary); right padding needs no mask in a causal model, and packed rows mark
padding with segment id 0.
"""
from __future__ import annotations

import functools
from typing import Optional

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from symbol_tuning.models import layers
from symbol_tuning.models.decoder.config import DecoderConfig, rope_frequencies

Array = jax.Array

def dense(features: int, kernel_axes: tuple[str, str], use_bias: bool, dtype,
          name: str) -> layers.Dense:
  """A linear map with an optional bias."""
  return layers.Dense(features, kernel_axes, layers.mlp_kernel_init, dtype, use_bias, name=name)


def rms_norm(cfg: DecoderConfig, axis_name: str, name: str) -> layers.RMSNorm:
  """The family's norm: HF's (offset + scale) applied in float32."""
  return layers.RMSNorm(cfg.norm_epsilon, cfg.jnp_dtype, cfg.norm_scale_offset, axis_name,
                        multiply_in_float32=True, name=name)


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray, factor: float) -> Array:
  """Rotary embedding, HF's half-split layout: x (b, l, h, d), positions (b, l).

  [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin], angles = position * inv_freq.
  """
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # (b, l, 1, d)
  cos, sin = jnp.cos(angles) * factor, jnp.sin(angles) * factor
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


def _softcap(x: Array, cap: Optional[float]) -> Array:
  return x if cap is None else jnp.tanh(x / cap) * cap


def full_cache_step(cache: tuple, index: Array, key: Array, value: Array,
                    chunk_valid: Array) -> tuple:
  """A full-attention layer's cache step: the chunk is written at `index`.

  cache: (key, value, valid), (b, max_len, kv_heads, d) twice and (b, max_len); key and
  value (b, chunk, kv_heads, d), after RoPE; chunk_valid (b, chunk).
  Returns (the new cache, (keys, values, mask)): the attention reads the whole cache, query
  i of the chunk the real positions at cache index <= index + i (mask (b, 1, chunk, max_len)).
  """
  cached_key, cached_value, cached_valid = cache
  key = lax.dynamic_update_slice(cached_key, key.astype(cached_key.dtype), (0, index, 0, 0))
  value = lax.dynamic_update_slice(cached_value, value.astype(cached_value.dtype),
                                   (0, index, 0, 0))
  valid = lax.dynamic_update_slice(cached_valid, chunk_valid, (0, index))
  chunk, length = chunk_valid.shape[1], cached_key.shape[1]
  seen = jnp.arange(length)[None, :] <= (index + jnp.arange(chunk))[:, None]
  seen = jnp.logical_and(seen[None, None], valid[:, None, None, :])
  return (key, value, valid), (key, value, seen)


def window_cache_step(cache: tuple, index: Array, key: Array, value: Array,
                      chunk_valid: Array, *, window: int) -> tuple:
  """A local layer's cache step: a ring of R = min(window, max_len) slots.

  Slot s holds the latest cache index i < `index` with i % R == s (transformers'
  SlidingWindowCache keeps the same positions). The chunk's queries attend to the ring's
  slots within the window and to the chunk's own keys (causal, within the window), so a
  chunk longer than the window (a prefill) needs no more than it; then the chunk's last R
  positions are written to their slots. Shapes as `full_cache_step`'s, the mask
  (b, 1, chunk, R + chunk) over the keys [ring; chunk].

  E.g. window 4, index 6 (indices 0..5 seen), chunk of 3: slots 0..3 hold indices 4, 5, 2,
  3; query index 6 sees 3, 4, 5 and itself; afterwards the slots hold 8, 5, 6, 7.
  """
  cached_key, cached_value, cached_valid = cache
  ring, chunk = cached_key.shape[1], key.shape[1]
  slots = jnp.arange(ring, dtype=jnp.int32)
  queries = index + jnp.arange(chunk, dtype=jnp.int32)
  held = index - 1 - jnp.mod(index - 1 - slots, ring)  # < 0: never written
  ring_seen = (held >= 0)[None, :] & (queries[:, None] - held[None, :] < window)
  ring_seen = ring_seen[None, None] & cached_valid[:, None, None, :]
  offsets = jnp.arange(chunk)
  chunk_seen = ((offsets[:, None] >= offsets[None, :])
                & (offsets[:, None] - offsets[None, :] < window))
  chunk_seen = chunk_seen[None, None] & chunk_valid[:, None, None, :]
  key, value = key.astype(cached_key.dtype), value.astype(cached_value.dtype)
  attended = (jnp.concatenate([cached_key, key], axis=1),
              jnp.concatenate([cached_value, value], axis=1),
              jnp.concatenate([ring_seen, chunk_seen], axis=-1))
  last = index + chunk - 1
  written = last - jnp.mod(last - slots, ring)  # the latest index each slot will hold
  take = written >= index
  source = jnp.clip(written - index, 0, chunk - 1)

  def write(cached, chunk_values):
    keep_shape = (1, ring) + (1,) * (cached.ndim - 2)
    return jnp.where(take.reshape(keep_shape), chunk_values[:, source], cached)

  stored = (write(cached_key, key), write(cached_value, value),
            write(cached_valid, chunk_valid))
  return stored, attended


class GroupedQueryAttention(nn.Module):
  """Causal self-attention with grouped-query heads, RoPE and optional QK-norm.

  Query head h reads key/value head h // (num_heads // num_kv_heads), as HF's
  `repeat_kv`. With `decode=True` keys/values (after RoPE) are kept in the
  'cache' collection (`cached_key`, `cached_value`: (batch, max_len, kv_heads,
  head_dim), `cached_valid`: (batch, max_len) and `cache_index`): the first call
  creates the cache; later calls append a chunk of one or more positions at
  `cache_index` and attend to everything cached so far (prefill a prompt, then
  decode token by token). `chunk_valid` (batch, chunk) marks the chunk's real
  tokens: padding (e.g. left padding of prompts of different lengths) is never
  attended to. `window`: keys `window` or more positions before the query are masked (a
  local layer: its RoPE is `rope_frequencies(config, local=True)`), and the cache's length
  axis is min(window, max_len), a ring buffer (see `window_cache_step`).
  """
  config: DecoderConfig
  window: Optional[int] = None

  @nn.compact
  def __call__(self, x: Array, positions: Array, mask: Optional[Array], *,
               decode: bool = False, deterministic: bool = True,
               chunk_valid: Optional[Array] = None) -> Array:
    cfg = self.config
    dtype = cfg.jnp_dtype
    heads, kv_heads, depth = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def project(name, n_heads):
      y = dense(n_heads * depth, ("embed", "joined_kv"), cfg.qkv_bias, dtype, name)(x)
      y = y.reshape(y.shape[:-1] + (n_heads, depth))
      if cfg.qk_norm and name != "value":
        y = rms_norm(cfg, "kv", f"{name}_norm")(y)
      return layers.constrain(y, ("batch", "length", "heads", "kv"))

    query, key, value = project("query", heads), project("key", kv_heads), project("value", kv_heads)

    local = self.window is not None
    inv_freq, factor = rope_frequencies(cfg, local=local)
    if decode and self.has_variable("cache", "cached_key"):
      names = ("cached_key", "cached_value", "cached_valid")
      cache = [self.variable("cache", n) for n in names]
      cache_index = self.variable("cache", "cache_index")
      index = cache_index.value
      if positions is None:  # absolute positions continue from the cache
        positions = jnp.broadcast_to(index + jnp.arange(x.shape[1], dtype=jnp.int32),
                                     x.shape[:2])
      query = apply_rope(query, positions, inv_freq, factor)
      key = apply_rope(key, positions, inv_freq, factor)
      if chunk_valid is None:
        chunk_valid = jnp.ones(x.shape[:2], jnp.bool_)
      step = functools.partial(window_cache_step, window=self.window) if local else \
          full_cache_step
      stored, (key, value, seen) = step(tuple(v.value for v in cache), index, key, value,
                                        chunk_valid.astype(jnp.bool_))
      for variable, array in zip(cache, stored):
        variable.value = array
      cache_index.value = index + x.shape[1]
      mask = seen if mask is None else jnp.logical_and(mask, seen)
    else:
      query = apply_rope(query, positions, inv_freq, factor)
      key = apply_rope(key, positions, inv_freq, factor)
      if decode:  # cache-creating call: zeros of the decode length (a local layer: the window)
        shape = key.shape if not local else (
            key.shape[0], min(self.window, key.shape[1])) + key.shape[2:]
        self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        self.variable("cache", "cached_valid", jnp.zeros, shape[:2], jnp.bool_)
        self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))

    groups = heads // kv_heads
    q = query.reshape(query.shape[:2] + (kv_heads, groups, depth)).astype(jnp.float32)
    logits = jnp.einsum("blkgd,bskd->bkgls", q * cfg.attention_scale, key.astype(jnp.float32))
    logits = _softcap(logits, cfg.attn_logit_softcap)
    if mask is not None:  # (batch, 1, q, k) -> (batch, 1, 1, q, k)
      logits = jnp.where(mask[:, :, None], logits, layers.NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jnp.einsum("bkgls,bskd->blkgd", weights, value.astype(dtype))
    out = out.reshape(out.shape[:2] + (heads * depth,))
    out = dense(x.shape[-1], ("joined_kv", "embed"), cfg.out_bias, dtype, "out")(out)
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(out, deterministic=deterministic)


class DecoderLayer(nn.Module):
  """Pre-norm attention and gated MLP, each with a residual; `window` as the attention's.
  With `post_norms` (Gemma 2/3) each branch's output is normed before its residual add."""
  config: DecoderConfig
  window: Optional[int] = None

  @nn.compact
  def __call__(self, x, positions, mask, deterministic=True, decode=False, chunk_valid=None):
    cfg = self.config
    h = rms_norm(cfg, "embed", "pre_self_attention_layer_norm")(x)
    h = GroupedQueryAttention(cfg, window=self.window, name="self_attention")(
        h, positions, mask, decode=decode, deterministic=deterministic, chunk_valid=chunk_valid)
    if cfg.post_norms:
      h = rms_norm(cfg, "embed", "post_self_attention_layer_norm")(h)
    x = x + h
    h = rms_norm(cfg, "embed", "pre_mlp_layer_norm")(x)
    h = layers.GatedMlp(cfg.mlp_dim, cfg.activation, cfg.dropout_rate, cfg.jnp_dtype,
                        dropout_on_output=True, name="mlp")(h, deterministic=deterministic)
    if cfg.post_norms:
      h = rms_norm(cfg, "embed", "post_mlp_layer_norm")(h)
    x = x + h
    return layers.constrain(x, ("batch", "length", "embed"))


def decoder_mask(length: int, segment_ids: Optional[Array] = None,
                 causal_attention: Optional[Array] = None, batch: int = 1) -> Array:
  """Boolean (batch, 1, q, k) mask: causal, same segment, bidirectional over the prefix.

  E.g. segment_ids [[1, 1, 2]] lets position 2 see only itself; causal_attention
  [[1, 1, 0]] lets positions 0 and 1 see each other.
  """
  idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  mask = layers.make_attention_mask(idx, idx, jnp.greater_equal)
  if causal_attention is not None:
    prefix = causal_attention.astype(jnp.bool_)
    mask = jnp.logical_or(mask, layers.make_attention_mask(prefix, prefix))
  if segment_ids is not None:
    mask = jnp.logical_and(mask, layers.make_attention_mask(segment_ids, segment_ids, jnp.equal))
  return mask


class DecoderOnly(nn.Module):
  """The stack, with t5x DecoderOnly's call signature; float32 logits (batch, len, vocab)."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, decoder_input_tokens, decoder_target_tokens=None,
               decoder_segment_ids=None, decoder_positions=None,
               decoder_causal_attention=None, *, enable_dropout=True, decode=False,
               max_decode_length=None):
    """`decoder_target_tokens` is accepted for t5x compatibility; it masks nothing
    (see the module docstring). With `decode=True` the 'cache' collection must be
    mutable; the first call (tokens of length `max_decode_length`) creates it, or
    start from `init_cache`. In cached calls `decoder_segment_ids` marks real tokens
    (non-zero) against padding, and `decoder_positions` default to continuing from
    the cache index."""
    del decoder_target_tokens
    cfg = self.config
    tokens = decoder_input_tokens
    if tokens.ndim != 2:
      raise ValueError(f"decoder_input_tokens must be (batch, length), got {tokens.shape}")
    cached = decode and "layers_0" in self.variables.get("cache", {})
    if decode and not cached and max_decode_length and max_decode_length != tokens.shape[-1]:
      raise ValueError(f"max_decode_length={max_decode_length} but the cache-creating call "
                       f"got {tokens.shape[-1]} positions")
    batch, length = tokens.shape
    chunk_valid = None
    if cached:
      if decoder_causal_attention is not None:
        raise ValueError("prefix attention cannot be used with cached decoding")
      if decoder_segment_ids is not None:
        chunk_valid = decoder_segment_ids > 0
      mask = None  # the cache mask is built per layer from cache_index
      positions = decoder_positions  # None: continue from the cache index
    else:
      mask = decoder_mask(length, decoder_segment_ids, decoder_causal_attention, batch)
      positions = decoder_positions
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens.shape)

    embedder = layers.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype,
                            name="token_embedder")
    x = embedder(tokens.astype(jnp.int32))
    if cfg.embed_scale:
      x = x * jnp.asarray(np.float32(cfg.d_model) ** 0.5, cfg.jnp_dtype)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=not enable_dropout)
    layer_cls = DecoderLayer
    if cfg.remat and not decode:
      layer_cls = nn.remat(DecoderLayer, static_argnums=(4, 5))
    masks = {None: mask}  # one mask per distinct window
    for i in range(cfg.num_layers):
      window = cfg.layer_window(i)
      if window not in masks and not cached:  # cached calls: each attention masks its cache
        index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        masks[window] = layers.combine_masks(mask, layers.window_mask(index, index, window))
      x = layer_cls(cfg, window=window, name=f"layers_{i}")(x, positions, masks.get(window),
                                                            not enable_dropout, decode,
                                                            chunk_valid)
    x = rms_norm(cfg, "embed", "decoder_norm")(x)
    if cfg.tie_embeddings:
      logits = embedder.attend(x)
    else:
      logits = dense(cfg.vocab_size, ("embed", "vocab"), False, jnp.float32, "logits_dense")(x)
    logits = _softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)
    return layers.constrain(logits, ("batch", "length", "vocab"))


class DecoderOnlyTransformer(nn.Module):
  """Thin wrapper for the outer 'decoder/' scope (t5x's DecoderWrapper)."""
  config: DecoderConfig

  def setup(self):
    self.decoder = DecoderOnly(self.config)

  def __call__(self, *args, **kwargs):
    return self.decoder(*args, **kwargs)


def init_inputs(batch: int = 1, length: int = 8) -> tuple:
  """Token array `DecoderOnlyTransformer.init` traces the parameter shapes with."""
  return (jnp.ones((batch, length), jnp.int32),)


MODULE = DecoderOnlyTransformer  # the family's module (ModelFamily.module)
