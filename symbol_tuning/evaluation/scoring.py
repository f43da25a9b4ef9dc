"""Model-side scoring: rank classification over label options and greedy decoding.

Rank classification scores option j of a prompt as sum_t log p(y_jt | prompt, y_j<t) over
the option's tokens plus EOS, and predicts the argmax (log-softmax over the model's whole
vocabulary, as t5x's score_batch does).

One Scorer for every model family: it batches and buckets, and the family's inference
operations (`ModelFamily.inference`, models/<family>/inference.py) run the model.
`Scorer.run` (the fast path) runs each prompt ONCE (T5: one encoder pass; decoder-only:
one prefill into the KV cache) and scores all of its options in one pass over that state;
greedy decoding continues from the same state. `Scorer.rank_naive` is t5's
rank_classification recipe: the whole prompt repeated once per option, each (prompt,
option) row a full forward pass, every input padded to one fixed length. Both give the
same scores (tested to 1e-5); the benchmark compares their speed.

Shapes are bucketed so `jax.jit` compiles once per bucket: prompts are grouped by input
length rounded up to a power of two, longest first, with one batch size per group (see
`Scorer.batches`; a group's last batch is padded with all-padding rows); every prompt's
options are padded to the call's largest option count (empty options, their scores
dropped), option targets to one power-of-two length per call, greedy decoding to one
length per call. So a call compiles each function once per input-length bucket: for a
real model a compilation costs far more than the padded rows. The jitted functions take the config as a static
argument, so runs of the same model shape share the compiled code (set
JAX_COMPILATION_CACHE_DIR to keep it across processes).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Sequence

import jax
import numpy as np

from symbol_tuning.models import registry
from symbol_tuning.models.base import ModelConfig

MIN_INPUT_BUCKET = 32
MIN_TARGET_BUCKET = 4
RANDOM_PREFIX = "random:"


def bucket(n: int, minimum: int = 1) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return 1 << (max(int(n), minimum, 1) - 1).bit_length()


@dataclasses.dataclass
class Request:
  """One prompt: ids with EOS; options' target ids (with EOS) to rank, and/or a greedy
  decoding length (None: no decoding)."""

  input_ids: Sequence[int]
  options: Optional[Sequence[Sequence[int]]] = None
  max_decode_len: Optional[int] = None


@dataclasses.dataclass
class Output:
  scores: Optional[np.ndarray] = None  # (num_options,) float: log-likelihood per option
  tokens: Optional[np.ndarray] = None  # greedy ids, cut before the first EOS


@dataclasses.dataclass(frozen=True)
class Model:
  config: ModelConfig
  params: dict
  description: str  # where it came from, for reports


def load_model(checkpoint: str, vocab_size: int | None = None, step: int | None = None) -> Model:
  """A checkpoint of any supported format (HF dir, t5x checkpoint, native dir, the embedded
  trainer's MODEL_DIR), or `random:<config>[:<seed>]` (e.g. random:tiny, random:llama-tiny) with random
  weights whose vocabulary fits `vocab_size` (rounded up to a multiple of 128, as t5x)."""
  if checkpoint.startswith(RANDOM_PREFIX):
    name, _, seed = checkpoint[len(RANDOM_PREFIX):].partition(":")
    overrides = {"dropout_rate": 0.0}
    if vocab_size:
      overrides["vocab_size"] = -(-vocab_size // 128) * 128
    config = registry.get_config(name, **overrides)
    params = registry.init_params(config, int(seed or 0))
    return Model(config, params, checkpoint)
  from symbol_tuning.checkpoints import convert  # pylint: disable=g-import-not-at-top

  config, params = convert.load_any(checkpoint, step=step)
  if vocab_size and config.vocab_size < vocab_size:
    raise ValueError(f"{checkpoint}: the model's vocabulary ({config.vocab_size} ids) is "
                     f"smaller than the tokenizer's ({vocab_size}); pick the matching --vocab")
  return Model(config, params, checkpoint)


class Scorer:
  """Scores and decodes Requests with one model of any family.

  A Request's `input_ids` are the prompt exactly as the model reads it (decoder-only: e.g.
  starting with the tokenizer's BOS; options are appended to it directly).
  """

  def __init__(self, model: Model, *, batch_size: int = 8, max_batch_tokens: int = 32768,
               eos_id: int = 1, vocab_limit: int | None = None):
    self.config = model.config
    self.params = jax.device_put(model.params)
    self.ops = registry.family_of(model.config).inference(self.config, self.params)
    self.batch_size = batch_size
    self.max_batch_tokens = max_batch_tokens  # long buckets get smaller batches
    self.eos_id = eos_id
    self.vocab_limit = vocab_limit or model.config.vocab_size  # greedy never emits ids past it
    self.min_target_length = MIN_TARGET_BUCKET  # raise it to share shapes across calls

  # --- batching ----------------------------------------------------------------------
  def batches(self, requests: Sequence[Request], key: Callable[[Request], tuple],
              full_batches: bool = False):
    """(key, padded batch size, indices) grouped by shape key, longest prompts first, ONE
    batch size per group (one compilation): the batch size, or for a group smaller than
    that its size rounded up to a power of two (at most 2x the rows); a group's last,
    partial batch is padded with all-padding rows. `full_batches`: always the batch size.

    Example: batch_size 8; groups of 3 and 19 prompts -> batches of 4 (3 + 1 padding row);
      8, 8 and 8 (3 + 5 padding rows): two shapes, where padding each group's last batch to
      a power of two would have compiled four."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
      groups.setdefault(key(r), []).append(i)
    for k in sorted(groups):
      length = k[0]
      size = max(1, min(self.batch_size, self.max_batch_tokens // length))
      members = sorted(groups[k], key=lambda i: -len(requests[i].input_ids))
      if not full_batches:
        size = min(size, bucket(len(members)))
      for start in range(0, len(members), size):
        yield k, size, members[start:start + size]

  def target_length(self, requests: Iterable[Request]) -> int:
    longest = max((len(o) for r in requests for o in (r.options or ())), default=1)
    return bucket(longest, max(MIN_TARGET_BUCKET, self.min_target_length))

  # --- public API --------------------------------------------------------------------
  def run(self, requests: Sequence[Request],
          progress: Callable[[int], None] | None = None) -> list[Output]:
    """Fast path: per batch, the prompts run once (the family's `start`); all options in
    one pass over that state; greedy decoding from the same state."""
    outputs = [Output() for _ in requests]
    t_len = self.target_length(requests)
    # One decoding length per run (early exit makes the slack cheap): fewer compilations.
    d_len = bucket(max((r.max_decode_len or 0 for r in requests), default=0),
                   MIN_TARGET_BUCKET)

    # One option count per call too: a prompt with fewer options gets empty ones.
    n_opt = max((len(r.options or ()) for r in requests), default=0)

    def key(r):
      return (bucket(len(r.input_ids), MIN_INPUT_BUCKET), bool(r.options),
              d_len if r.max_decode_len else 0)

    for (length, ranked, dec_len), size, members in self.batches(requests, key):
      state = self.ops.start([requests[i].input_ids for i in members], size, length,
                             max(t_len if ranked else 0, dec_len))
      if ranked:
        options = np.zeros((size, n_opt, t_len), np.int32)
        option_lengths = np.zeros((size, n_opt), np.int32)
        for row, i in enumerate(members):
          for j, ids in enumerate(requests[i].options):
            options[row, j, :len(ids)] = ids
            option_lengths[row, j] = len(ids)
        scores = np.asarray(self.ops.score(state, options, option_lengths))
        for row, i in enumerate(members):
          outputs[i].scores = scores[row, :len(requests[i].options)]
      if dec_len:
        decoded = np.asarray(self.ops.decode(state, dec_len, self.eos_id, self.vocab_limit))
        for row, i in enumerate(members):
          outputs[i].tokens = self._cut(decoded[row], requests[i].max_decode_len)
      if progress:
        progress(len(members))
    return outputs

  def rank_naive(self, requests: Sequence[Request], fixed_length: int | None = None,
                 bucketed: bool = False,
                 progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """t5's rank_classification as t5x runs it: the prompt repeated per option, a full
    forward pass per (prompt, option) row, all inputs padded to `fixed_length` (default: the
    longest prompt, rounded up to a power of two) in full batches. `bucketed=True` uses the
    fast path's length buckets and batching instead (to separate the two effects)."""
    rows = [(i, j) for i, r in enumerate(requests) for j in range(len(r.options or ()))]
    t_len = self.target_length(requests)
    if fixed_length is None:
      fixed_length = bucket(max(len(r.input_ids) for r in requests), MIN_INPUT_BUCKET)
    row_requests = [Request(requests[i].input_ids, [requests[i].options[j]]) for i, j in rows]

    def key(r):
      return (bucket(len(r.input_ids), MIN_INPUT_BUCKET) if bucketed else fixed_length,)

    scores = [np.zeros(len(r.options or ()), np.float32) for r in requests]
    for (length,), size, members in self.batches(row_requests, key, not bucketed):
      out = np.asarray(self.ops.score_naive([row_requests[m].input_ids for m in members],
                                            [row_requests[m].options[0] for m in members],
                                            size, length, t_len))
      for row, m in enumerate(members):
        i, j = rows[m]
        scores[i][j] = out[row]
      if progress:
        progress(len(members))
    return scores

  def rank(self, requests: Sequence[Request]) -> list[np.ndarray]:
    """Fast rank-classification scores only."""
    plain = [dataclasses.replace(r, max_decode_len=None) for r in requests]
    return [o.scores for o in self.run(plain)]

  def _cut(self, ids: np.ndarray, limit: int) -> np.ndarray:
    ids = ids[:limit]
    ends = np.flatnonzero(ids == self.eos_id)
    return ids[:ends[0]] if len(ends) else ids
