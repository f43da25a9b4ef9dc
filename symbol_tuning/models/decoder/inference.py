"""The decoder family's inference operations for scoring: from the prompt's KV cache.

The decoder-only analogue of "encode once": each prompt is run ONCE (prefill) into the
KV cache; the cache is then repeated per option and every option is scored in one
chunked pass that reads it (option token 0 from the prefill's last logits, tokens 1..
from the chunk). Greedy decoding continues from the same cache, one token per step.
`score_naive` is the recipe it replaces: prompt + option as one sequence, a full forward
pass per (prompt, option) row. Both give the same scores (tested to 1e-5).

Prompts of a batch are LEFT-padded to their length bucket, so every prompt ends at the
same cache index and options start right after; the padding is marked invalid in the
cache (never attended to) and positions count from each prompt's first real token, so
each row sees exactly what it would see alone. Local (windowed) layers' caches hold only
the last `window` positions (`network.window_cache_step`): a prompt longer than the window
leaves just its tail there. An option's score sums its own tokens' log-probabilities by
length, not by token id (id 0 is a real token in some vocabularies).

A prompt is the ids exactly as the model reads it (e.g. starting with the tokenizer's BOS);
options are appended to it directly. `evaluation/scoring.py`'s Scorer batches and buckets.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from symbol_tuning.models import base
from symbol_tuning.models.decoder import network


def _module(config):
  return network.DecoderOnlyTransformer(config)


def init_cache(config, batch: int, max_decode_length: int) -> dict:
  """Zero decode cache ('cache' collection) for `decode=True` calls."""
  return base.zero_cache(_module(config), *network.init_inputs(batch, max_decode_length))


def _log_softmax(logits):
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _prefill(config, params, tokens, positions, valid, cache_length):
  """Left-padded prompts (B, L) -> (last position's logits (B, V), cache of cache_length)."""
  cache = init_cache(config, tokens.shape[0], cache_length)
  logits, mutated = _module(config).apply(
      {"params": params, "cache": cache}, tokens, decoder_segment_ids=valid.astype(jnp.int32),
      decoder_positions=positions, enable_dropout=False, decode=True, mutable=["cache"])
  return logits[:, -1], mutated["cache"]


def _repeat_cache(cache, times: int):
  return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0) if x.ndim else x, cache)


@functools.partial(jax.jit, static_argnums=0)
def _score_from_cache(config, params, last_logits, cache, next_positions, options, lengths):
  """options (B, O, T) right-padded, lengths (B, O) -> (B, O) summed log-likelihoods."""
  b, o, t = options.shape
  first = jnp.take_along_axis(_log_softmax(last_logits)[:, None, :], options[..., :1], axis=-1)
  scores = jnp.where(lengths > 0, first[..., 0], 0.0)
  if t == 1:
    return scores
  flat = options.reshape(b * o, t)
  positions = jnp.repeat(next_positions, o)[:, None] + jnp.arange(t - 1, dtype=jnp.int32)
  logits, _ = _module(config).apply(
      {"params": params, "cache": _repeat_cache(cache, o)}, flat[:, :-1],
      decoder_positions=positions, enable_dropout=False, decode=True, mutable=["cache"])
  picked = jnp.take_along_axis(_log_softmax(logits), flat[:, 1:, None], axis=-1)[..., 0]
  inside = jnp.arange(1, t)[None, :] < lengths.reshape(b * o, 1)
  return scores + jnp.sum(jnp.where(inside, picked, 0.0), axis=-1).reshape(b, o)


@functools.partial(jax.jit, static_argnums=0)
def _forward_score(config, params, tokens, positions, start, lengths):
  """Naive recipe: rows of prompt + option (right-padded), one full forward pass each.
  The option occupies [start, start + length) of its row."""
  logits = _module(config).apply({"params": params}, tokens, decoder_positions=positions,
                                 enable_dropout=False)
  picked = jnp.take_along_axis(_log_softmax(logits[:, :-1]), tokens[:, 1:, None], axis=-1)[..., 0]
  index = jnp.arange(1, tokens.shape[1])[None, :]
  inside = (index >= start[:, None]) & (index < (start + lengths)[:, None])
  return jnp.sum(jnp.where(inside, picked, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _greedy(config, params, last_logits, cache, next_positions, length, eos_id, vocab_limit):
  """Greedy decoding continuing from the prefilled cache; stops when every row is done."""
  model = _module(config)
  batch = last_logits.shape[0]
  allowed = jnp.arange(config.vocab_size) < vocab_limit

  def cond(state):
    step, _, _, _, done = state
    return (step < length) & ~jnp.all(done)

  def body(state):
    step, cache, logits, out, done = state
    token = jnp.argmax(jnp.where(allowed, logits, -jnp.inf), axis=-1).astype(jnp.int32)
    token = jnp.where(done, 0, token)
    out = out.at[:, step].set(token)
    next_logits, mutated = model.apply(
        {"params": params, "cache": cache}, token[:, None],
        decoder_positions=(next_positions + step)[:, None], enable_dropout=False, decode=True,
        mutable=["cache"])
    return step + 1, mutated["cache"], next_logits[:, -1], out, done | (token == eos_id)

  state = (jnp.int32(0), cache, last_logits, jnp.zeros((batch, length), jnp.int32),
           jnp.zeros((batch,), jnp.bool_))
  return jax.lax.while_loop(cond, body, state)[3]


def left_pad(prompts: Sequence[Sequence[int]], size: int, length: int):
  """(tokens, positions, valid), each (size, length): prompts right-aligned.

  Example: prompts [[5, 6], [7]], size 3, length 3
    -> tokens [[0, 5, 6], [0, 0, 7], [0, 0, 0]], positions [[0, 0, 1], [0, 0, 0], [0, 0, 0]],
       valid [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
  """
  tokens = np.zeros((size, length), np.int32)
  positions = np.zeros((size, length), np.int32)
  valid = np.zeros((size, length), bool)
  for row, ids in enumerate(prompts):
    n = len(ids)
    if n > length:
      raise ValueError(f"prompt of {n} tokens does not fit length {length}")
    if n:
      tokens[row, length - n:] = ids
      positions[row, length - n:] = np.arange(n)
      valid[row, length - n:] = True
  return tokens, positions, valid


class DecoderInference(base.Inference):
  """Decoder-only inference: the state of a batch is (last logits, KV cache, each row's
  next position)."""

  def start(self, prompts, size, length, extra_length):
    """Prefills the left-padded prompts into a cache with `extra_length` more positions."""
    if any(len(p) == 0 for p in prompts):
      raise ValueError("a decoder-only prompt needs at least one token (e.g. BOS)")
    tokens, positions, valid = left_pad(prompts, size, length)
    lengths = np.zeros(size, np.int32)
    lengths[:len(prompts)] = [len(p) for p in prompts]
    last, cache = _prefill(self.config, self.params, jnp.asarray(tokens),
                           jnp.asarray(positions), jnp.asarray(valid), length + extra_length)
    return last, cache, jnp.asarray(lengths)

  def score(self, state, options, option_lengths):
    last, cache, next_positions = state
    return _score_from_cache(self.config, self.params, last, cache, next_positions,
                             jnp.asarray(options), jnp.asarray(option_lengths))

  def decode(self, state, length, eos_id, vocab_limit):
    last, cache, next_positions = state
    return _greedy(self.config, self.params, last, cache, next_positions, length, eos_id,
                   vocab_limit)

  def score_naive(self, prompts, options, size, length, target_length):
    """Rows of prompt + option, padded to `length` + the option bucket, a full pass each."""
    width = length + target_length
    tokens = np.zeros((size, width), np.int32)
    positions = np.zeros((size, width), np.int32)
    start, lengths = np.zeros(size, np.int32), np.zeros(size, np.int32)
    for row, (prompt, option) in enumerate(zip(prompts, options)):
      sequence = list(prompt) + list(option)
      tokens[row, :len(sequence)] = sequence
      positions[row] = np.arange(width)
      start[row], lengths[row] = len(prompt), len(option)
    return _forward_score(self.config, self.params, jnp.asarray(tokens), jnp.asarray(positions),
                          jnp.asarray(start), jnp.asarray(lengths))

  @classmethod
  def jitted(cls) -> tuple:
    return (_prefill, _score_from_cache, _forward_score, _greedy)


INFERENCE = DecoderInference  # the family's inference operations (ModelFamily.inference)
