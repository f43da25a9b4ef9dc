"""T5's inference operations for scoring: encode each prompt once.

`start` runs the encoder ONCE per batch of prompts; `score` scores all of a prompt's
options in one decoder pass whose batch is the encoder output repeated per option (never
the prompt); `decode` decodes greedily from the same encoder output with the decoder's
KV cache. `score_naive` is t5's rank_classification recipe: each (prompt, option) row a
full encoder-decoder pass. Log-likelihoods are over the whole vocabulary (log-softmax),
as t5x's score_batch. The jitted functions take the config as a static argument, so
every scorer of the same model shape shares the compiled executables.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from symbol_tuning.models import base
from symbol_tuning.models.t5 import network


def _module(config) -> network.Transformer:
  return network.Transformer(config)


def token_logprobs(logits, targets):
  """Summed log-probabilities of the non-zero `targets` (id 0 pads a T5 target)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, picked, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _encode(config, params, tokens):
  return _module(config).apply({"params": params}, tokens, enable_dropout=False,
                               method=network.Transformer.encode)


@functools.partial(jax.jit, static_argnums=0)
def _score(config, params, encoded, enc_tokens, targets):
  """encoded (B, L, D), targets (B, O, T) -> (B, O): the encoder output is repeated per
  option, never the prompt."""
  b, o, t = targets.shape
  rows_encoded = jnp.repeat(encoded, o, axis=0)
  rows_tokens = jnp.repeat(enc_tokens, o, axis=0)
  flat = targets.reshape(b * o, t)
  dec_in = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))  # the decoder starts from id 0
  logits = _module(config).apply({"params": params}, rows_encoded, rows_tokens, dec_in, flat,
                                 enable_dropout=False, method=network.Transformer.decode)
  return token_logprobs(logits, flat).reshape(b, o)


@functools.partial(jax.jit, static_argnums=0)
def _forward_score(config, params, enc_tokens, targets):
  """The naive recipe: a full encoder-decoder pass per (prompt, option) row."""
  dec_in = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))
  logits = _module(config).apply({"params": params}, enc_tokens, dec_in, targets,
                                 enable_dropout=False)
  return token_logprobs(logits, targets)


def init_cache(config, batch: int, max_decode_length: int, input_len: int = 8) -> dict:
  """Zero decode cache ('cache' collection) for `decode=True` steps."""
  return base.zero_cache(_module(config), *network.init_inputs(batch, input_len,
                                                               max_decode_length))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _greedy(config, params, encoded, enc_tokens, length, eos_id, vocab_limit):
  """Greedy decoding with the decode cache; stops when every row has emitted EOS."""
  model = _module(config)
  batch = encoded.shape[0]
  cache = init_cache(config, batch, length)
  allowed = jnp.arange(config.vocab_size) < vocab_limit
  done = ~jnp.any(enc_tokens > 0, axis=-1)  # all-padding rows: nothing to decode

  def cond(state):
    step, _, _, _, done = state
    return (step < length) & ~jnp.all(done)

  def body(state):
    step, cache, prev, out, done = state
    logits, mutated = model.apply(
        {"params": params, "cache": cache}, encoded, enc_tokens, prev[:, None],
        enable_dropout=False, decode=True, method=network.Transformer.decode,
        mutable=["cache"])
    logits = jnp.where(allowed, logits[:, -1], -jnp.inf)
    token = jnp.where(done, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))
    out = out.at[:, step].set(token)
    return step + 1, mutated["cache"], token, out, done | (token == eos_id)

  state = (jnp.int32(0), cache, jnp.zeros((batch,), jnp.int32),
           jnp.zeros((batch, length), jnp.int32), done)
  return jax.lax.while_loop(cond, body, state)[3]


def right_pad(prompts, size: int, length: int) -> np.ndarray:
  """(size, length) int32 of the prompts, right-padded with id 0.

  Example: right_pad([[5, 6], [7]], 3, 3) -> [[5, 6, 0], [7, 0, 0], [0, 0, 0]]
  """
  tokens = np.zeros((size, length), np.int32)
  for row, ids in enumerate(prompts):
    if len(ids) > length:
      raise ValueError(f"prompt of {len(ids)} tokens does not fit length {length}")
    tokens[row, :len(ids)] = ids
  return tokens


class T5Inference(base.Inference):
  """Encoder-decoder inference: the state of a batch is (prompt tokens, encoder output)."""

  def start(self, prompts, size, length, extra_length):
    del extra_length  # the encoder output does not grow with the targets
    tokens = jnp.asarray(right_pad(prompts, size, length))
    return tokens, _encode(self.config, self.params, tokens)

  def score(self, state, options, option_lengths):
    del option_lengths  # id 0 ends a T5 target
    tokens, encoded = state
    return _score(self.config, self.params, encoded, tokens, jnp.asarray(options))

  def decode(self, state, length, eos_id, vocab_limit):
    tokens, encoded = state
    return _greedy(self.config, self.params, encoded, tokens, length, eos_id, vocab_limit)

  def score_naive(self, prompts, options, size, length, target_length):
    tokens = right_pad(prompts, size, length)
    targets = right_pad(options, size, target_length)
    return _forward_score(self.config, self.params, jnp.asarray(tokens), jnp.asarray(targets))

  @classmethod
  def jitted(cls) -> tuple:
    return (_encode, _score, _forward_score, _greedy)


INFERENCE = T5Inference  # the family's inference operations (ModelFamily.inference)
