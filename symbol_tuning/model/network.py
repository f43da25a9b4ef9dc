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
import jax.numpy as jnp

from symbol_tuning.model import layers
from symbol_tuning.model.config import T5Config

Array = jax.Array


def _dropout(cfg: T5Config, broadcast: bool = True) -> nn.Dropout:
  return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,) if broadcast else ())


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadAttention:
  return layers.MultiHeadAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.jnp_dtype,
      dropout_rate=cfg.dropout_rate, float32_logits=cfg.float32_attention_logits,
      name=name)


def _norm(cfg: T5Config, name: str) -> layers.LayerNorm:
  return layers.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.jnp_dtype, name=name)


def _mlp(cfg: T5Config) -> layers.MlpBlock:
  return layers.MlpBlock(intermediate_dim=cfg.mlp_dim, dropout_rate=cfg.dropout_rate,
                         dtype=cfg.jnp_dtype, name="mlp")


def _relpos(cfg: T5Config) -> layers.RelativePositionBiases:
  return layers.RelativePositionBiases(
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


# -----------------------------------------------------------------------------
# Helpers.
# -----------------------------------------------------------------------------
def _dummy_inputs(batch: int, input_len: int, target_len: int):
  return (jnp.ones((batch, input_len), jnp.int32),
          jnp.ones((batch, target_len), jnp.int32),
          jnp.ones((batch, target_len), jnp.int32))


def _init_variables(config: T5Config, rng, batch, input_len, target_len):
  model = Transformer(config)
  return model.init({"params": rng, "dropout": rng},
                    *_dummy_inputs(batch, input_len, target_len),
                    enable_dropout=False)


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _init_params_jit(config, rng, batch, input_len, target_len):
  return nn.unbox(_init_variables(config, rng, batch, input_len, target_len)["params"])


def init_params(config: T5Config, rng=None, batch: int = 1, input_len: int = 8,
                target_len: int = 8) -> dict[str, Any]:
  """Randomly initialised, unboxed float32 params (t5x initializers)."""
  if rng is None:
    rng = jax.random.PRNGKey(0)
  elif isinstance(rng, int):
    rng = jax.random.PRNGKey(rng)
  return _init_params_jit(config, rng, batch, input_len, target_len)


@functools.lru_cache(maxsize=32)
def _boxed_param_shapes(config: T5Config):
  return jax.eval_shape(lambda r: _init_variables(config, r, 1, 8, 8)["params"],
                        jax.random.PRNGKey(0))


def _copy_tree(tree):
  return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def param_shapes(config: T5Config) -> dict[str, Any]:
  """Tree of jax.ShapeDtypeStruct matching `init_params` (traced, not computed)."""
  return _copy_tree(nn.unbox(_boxed_param_shapes(config)))


def get_logical_axes(config: T5Config) -> dict[str, Any]:
  """Tree of PartitionSpec of t5x logical axis names, matching the params tree.

  Map it to mesh axes with e.g. `nn.logical_to_mesh(axes, rules)`.
  """
  return _copy_tree(nn.get_partition_spec(_boxed_param_shapes(config)))


def init_cache(config: T5Config, batch: int, max_decode_length: int,
               input_len: int = 8) -> dict[str, Any]:
  """Zero decode cache ('cache' collection) for `decode=True` steps."""
  model = Transformer(config)

  def make(rng):
    return model.init({"params": rng}, *_dummy_inputs(batch, input_len, max_decode_length),
                      enable_dropout=False, decode=True)["cache"]

  shapes = jax.eval_shape(make, jax.random.PRNGKey(0))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
