"""Prompt building in plain Python, without TensorFlow: the prompts of one task split.

`PromptBuilder` turns a query position and a seed into a prompt (exemplars, template,
symbols, fitting, token ids); `build_batch` builds a batch of them as flat arrays, the unit
of work of the seqio preprocessor (`pipeline.build_prompts`), run in this process or in a
prompt worker process (`prompt_workers`), which imports this module and not TensorFlow.
Prompts are pure functions of (task, split, position, seed): any process builds the same.
"""
import array
import dataclasses
import functools
import json
import random

from absl import logging
import numpy as np

from symbol_tuning.data import catalogue, prompts, sources, symbols, tokens
from symbol_tuning.data.sources.examples import DataSourceError, stable_seed

_COMPOSE_CHECKS = 16  # probe prompts per builder whose composed ids are checked (_composes)
# Prompts built per Python call: one tf.numpy_function call per example cost more than the
# prompt itself (benchmarks/prompts.py); a batch amortises the call and the tensor copies.
# Any size gives the same stream. Handed to a prompt worker, 128 took ~20% less CPU per
# prompt than 32, in the main process and in the workers; built in-process they measured
# the same, and 32 keeps the first prompts of an 18-task mixture quick.
BUILD_BATCH = 32
WORKER_BUILD_BATCH = 128
NUM_META = 6  # template, k, num_dropped, gold, k_drawn, query_index


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  """Everything a task needs to build its prompts."""

  task_name: str  # the seqio task name (folded into every seed)
  entry: catalogue.DatasetEntry  # the dataset
  setting: prompts.Setting  # how prompts are built
  query_splits: tuple[tuple[str, str], ...]  # (task split, dataset split the queries come from)

  def dataset_split(self, split: str) -> str:
    for task_split, data_split in self.query_splits:
      if task_split == split:
        return data_split
    raise ValueError(f"task {self.task_name}: no split {split!r}; "
                     f"has {[s for s, _ in self.query_splits]}")


@functools.cache
def exemplar_data(entry: catalogue.DatasetEntry) -> prompts.LabelledData:
  loaded = sources.load_split(entry, entry.train_split)
  return prompts.LabelledData(name=entry.key, labels=entry.labels, examples=loaded.examples,
                              instruction=sources.instruction(entry))


@functools.cache
def queries(spec: PromptSpec, split: str) -> tuple[prompts.Example, ...]:
  """The query examples of a task split (a fixed random subset when capped)."""
  data_split = spec.dataset_split(split)
  examples = sources.load_split(spec.entry, data_split).examples
  cap = spec.entry.max_queries if spec.setting.name != "tune" else None
  if spec.setting.name != "tune" and cap is not None and len(examples) > cap:
    rng = random.Random(stable_seed("queries", spec.entry.key, data_split))
    keep = sorted(rng.sample(range(len(examples)), cap))
    examples = tuple(examples[i] for i in keep)
  return examples


def k_cap(spec: PromptSpec, split: str) -> int:
  """The largest k every class supports; a clear error if below the setting's minimum."""
  data = exemplar_data(spec.entry)
  same_split = spec.dataset_split(split) == spec.entry.train_split
  counts = data.class_counts()
  cap = min(counts) - (1 if same_split else 0)
  if cap < max(spec.setting.k_min, 1 if spec.setting.k_max else 0):
    cls = counts.index(min(counts))
    raise DataSourceError(
        f"dataset {spec.entry.key!r}: class {spec.entry.labels[cls]!r} has {counts[cls]} "
        f"examples in split {spec.entry.train_split!r}; setting {spec.setting.name!r} needs "
        f"at least {spec.setting.k_min} exemplars per class besides the query")
  return cap


class PromptBuilder:
  """Builds the prompts of one task split in plain Python (used by seqio and the CLI)."""

  def __init__(self, spec: PromptSpec, split: str, max_input_tokens: int | None,
               tokenizer: tokens.Tokenizer):
    self.spec, self.split = spec, split
    self.data = exemplar_data(spec.entry)
    self.queries = queries(spec, split)
    self.k_max = k_cap(spec, split)
    self.same_split = spec.dataset_split(split) == spec.entry.train_split
    self.max_input_tokens = max_input_tokens
    self.tokens = tokens.TokenCounter(tokenizer)
    self.count_tokens = self.tokens if max_input_tokens else None
    self.pieces = tokens.PieceEncoder(tokenizer)
    # Tokenize every example up front, in one batch (or read the ids from the on-disk
    # cache): lazily, the first prompts of a run spent most of their time tokenizing.
    self.pieces.prime([ex.text for ex in self.data.examples])
    if not self.same_split:
      self.pieces.prime([ex.text for ex in self.queries])
    pool = symbols.get_pool(spec.setting.symbol_pool)
    self.sample_symbols = pool.sample
    if spec.setting.labels == "symbols":  # fresh symbols per prompt: tokenize the pool too
      self.pieces.share(f"symbol_pool:{pool.name}",
                        lambda: pool.integers + pool.letter_strings + pool.words)
    self.compose = True  # the probes are built composed ...
    self.compose = self._composes()  # ... and decide: memoised pieces or whole prompts

  def _composes(self) -> bool:
    """Whether this vocabulary tokenizes prompts piecewise: decided on the same probe
    prompts (the first queries, seed 0) in every process, before any prompt is built, so a
    prompt's ids never depend on which prompts a process happened to build first.

    A probe whose composed ids differ from whole-prompt tokenization but decode to the same
    text passes: sentencepiece breaks ties between equal-score segmentations by float
    rounding that depends on the preceding text ("Hmmm" as m+mm or mm+m), so no piecewise
    scheme matches those, and both are the vocabulary's best segmentation.
    """
    for position in range(min(_COMPOSE_CHECKS, len(self.queries))):
      try:
        prompt = self.build(position, 0)
      except prompts.PromptError:
        continue  # cannot fit: nothing to compare
      whole = self.pieces.encode_full(prompt.inputs)
      if (list(prompt.input_ids) != whole
          and self.pieces.decode(prompt.input_ids) != self.pieces.decode(whole)):
        logging.warning("%s: this vocabulary does not tokenize prompts piecewise; "
                        "tokenizing whole prompts instead (slower)", self.spec.task_name)
        return False
    return True

  def seed(self, position: int, seed: int | tuple[int, ...]) -> int:
    seed = seed if isinstance(seed, tuple) else (seed,)
    return stable_seed(self.spec.task_name, self.split, position, *seed)

  def build(self, position: int, seed, max_input_tokens: int | None = None) -> prompts.Prompt:
    """The prompt for query `position`; `input_ids` are its token ids (no EOS). The prompt
    fits `max_input_tokens` (default: the builder's)."""
    budget = self.max_input_tokens if max_input_tokens is None else max_input_tokens
    prompt = prompts.build_prompt(
        self.data, self.queries[position], self.spec.setting, self.seed(position, seed),
        sample_symbols=self.sample_symbols, count_tokens=self.count_tokens,
        max_input_tokens=budget, k_max=self.k_max,
        exclude_query=self.same_split, piece_ids=self.pieces if self.compose else None)
    if prompt.input_ids is None:
      prompt = dataclasses.replace(prompt, input_ids=self.tokens.encode(prompt.inputs))
    return prompt

  def build_sequence(self, position: int, seed, model_length: int,
                     all_options: bool = False) -> prompts.Prompt:
    """Decoder-only: the prompt whose whole sequence, prompt + EOS + answer + EOS, fits
    `model_length` (with `all_options`, the longest label option stands for the answer,
    as rank classification appends each). The answer is drawn before fitting (same seed,
    same draws), so a second fit with the answer's length reserved is exact; the query is
    never cut (PromptError when it cannot fit with one exemplar per class).

    Example: model_length 544, answer "8270" of 3 tokens -> a prompt of <= 539 tokens.
    """
    prompt = self.build(position, seed, model_length - 3)  # an answer has >= 1 token
    answers = prompt.metadata["options"] if all_options else [prompt.targets]
    answer = max(len(self.pieces(a)) for a in answers)
    if len(prompt.input_ids) + answer + 2 > model_length:
      prompt = self.build(position, seed, model_length - 2 - answer)
    return prompt


def validate(spec: PromptSpec, split: str) -> None:
  """Reads and checks everything a split's prompts need (queries, exemplars, k range).

  Called before tf.data starts: an error raised inside tf.numpy_function surfaces as a
  TensorFlow InvalidArgumentError, and the process can then hang at exit in the prefetch
  iterator's destructor; raised here, it is the DataSourceError the CLI reports in a line.
  """
  queries(spec, split)
  k_cap(spec, split)


def clear_caches() -> None:
  """Forgets loaded data (after moving a data directory)."""
  sources.clear_caches()
  for cached in (exemplar_data, queries):
    cached.cache_clear()


def build_batch(builder: PromptBuilder, positions, seeds, model_length: int | None = None,
                eos: tuple[int, int | None, int | None] | None = None) -> tuple:
  """Builds the prompts of a batch of queries as flat arrays (one numpy_function call).

  Example: positions [17, 4, 9], seeds [[5, 9], [6, 1], [2, 2]] (seqio's per-example seed
  pairs), where query 4's prompt cannot fit
    -> (kept [0, 2] (indices into the batch), inputs_str [2] bytes, targets_str [2] bytes,
        input ids of both prompts concatenated, their lengths [2], target ids concatenated,
        their lengths [2], meta [2, 6] int32 (template, k, num_dropped, gold, k_drawn,
        query_index), labels_json [2] bytes)
  Prompts that cannot fit are left out (the caller counts them: len(positions) - len(kept)).
  `model_length` (decoder-only) fits prompt + EOS + every label option + EOS to that length
  instead of the prompt to the builder's budget. `eos` = (eos_id, input length, target
  length) ends both id sequences with EOS as seqio.preprocessors.append_eos_after_trim does
  (cut to length - 1 first; a length of None does not cut).
  """
  kept, inputs_str, targets_str, labels_json, meta = [], [], [], [], []
  input_ids, target_ids = [], []
  for i, (position, seed) in enumerate(zip(positions, seeds)):
    seed = tuple(int(s) for s in seed)
    try:
      # all_options: every label option fits after the prompt, so a rank twin scores the
      # same prompt for each option (and the exact-match task sees that prompt too).
      p = (builder.build_sequence(int(position), seed, model_length, all_options=True)
           if model_length else builder.build(int(position), seed))
    except prompts.PromptError:
      continue
    m = p.metadata
    kept.append(i)
    inputs_str.append(p.inputs.encode())
    targets_str.append(p.targets.encode())
    labels_json.append(json.dumps({"symbols": m["symbols"], "options": m["options"]}).encode())
    input_ids.append(p.input_ids)
    target_ids.append(builder.pieces(p.targets))
    meta.append((m["template"], m["k"], m["num_dropped"], m["gold"], m["k_drawn"],
                 m["query_index"]))
  if eos is not None:
    eos_id, input_length, target_length = eos
    input_ids = [_end_with(ids, eos_id, input_length) for ids in input_ids]
    target_ids = [_end_with(ids, eos_id, target_length) for ids in target_ids]
  strings = lambda items: np.array(items, object) if items else np.zeros([0], object)
  return (np.array(kept, np.int32), strings(inputs_str), strings(targets_str),
          _flat(input_ids), np.array([len(a) for a in input_ids], np.int64),
          _flat(target_ids), np.array([len(a) for a in target_ids], np.int64),
          np.array(meta, np.int32).reshape(-1, NUM_META), strings(labels_json))


def _end_with(ids, eos_id: int, length: int | None) -> array.array:
  ids = array.array("i", ids[:length - 1] if length else ids)
  ids.append(eos_id)
  return ids


def _flat(parts) -> np.ndarray:
  return np.concatenate(
      [np.frombuffer(a, np.int32) if isinstance(a, array.array) else np.asarray(a, np.int32)
       for a in parts]) if parts else np.zeros([0], np.int32)
