"""The seqio side of prompt building: a source of queries and the prompt preprocessor.

A task is `QuerySource` (which examples are queries) + `build_prompts` (exemplars,
template, symbols, fitting, tokenization; needs sequence_length) + `append_eos_after_trim`.
Example (task symbol_tuning.bigbench.navigate, split train):
  source:       {"query": 17}
  build_prompts -> {"inputs_pretokenized": "X = Turn left. Take 3 steps.\\nY = 8270\\n\\n...
                    \\nX = Always face forward. ...\\nY =", "targets_pretokenized": "8270",
                    "inputs": [...ids...], "targets": [...], "template": 7, "k": 5,
                    "num_dropped": 0, "gold": 0, "symbols": '{"True": "8270", ...}', ...}
Randomness is stateless: seqio hands each example a seed (map_over_dataset(num_seeds=1)),
and the task name and query position are folded into it, so tasks of a mixture never share
draws and a seed reproduces every prompt.
"""
import array
import collections
import dataclasses
import functools
import json
import random
import re
import threading

from absl import logging
import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning import catalogue, decoder_packing, prompts, sources, symbols
from symbol_tuning import vocab as vocab_lib
from symbol_tuning.sources.examples import DataSourceError, stable_seed

DEFAULT_INPUT_LENGTH = 2048
_COMPOSE_CHECKS = 16  # prompts per builder whose composed ids are checked against spm
# Prompts skipped because they could not fit, per task (reported by `symbol-tuning`).
SKIPPED: collections.Counter = collections.Counter()


class NoPromptFitsError(ValueError):
  """Not one prompt of a task split fits the length: a repeating stream of it would spin
  forever in its filter, so the pipeline stops with this instead."""


def python_error(error) -> str:
  """The Python exception a tf.numpy_function raised, from TensorFlow's wrapped message."""
  # Its last line: "module.path.NameError: message" (the module path is optional).
  found = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$", error.message,
                     re.MULTILINE)
  return ": ".join(found[-1]) if found else " ".join(error.message.split())[:300]


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
               vocabulary: seqio.Vocabulary | None = None):
    self.spec, self.split = spec, split
    self.data = exemplar_data(spec.entry)
    self.queries = queries(spec, split)
    self.k_max = k_cap(spec, split)
    self.same_split = spec.dataset_split(split) == spec.entry.train_split
    self.max_input_tokens = max_input_tokens
    self.tokens = vocab_lib.TokenCounter(vocabulary)
    self.count_tokens = self.tokens if max_input_tokens else None
    self.pieces = vocab_lib.PieceEncoder(vocabulary)
    # Tokenize every example up front, in one batch (or read the ids from the on-disk
    # cache): lazily, the first prompts of a run spent most of their time tokenizing.
    self.pieces.prime([ex.text for ex in self.data.examples])
    if not self.same_split:
      self.pieces.prime([ex.text for ex in self.queries])
    self.compose = True  # compose ids from memoised pieces while the check below holds
    self._checked = 0
    self.num_fitted = self.num_unfit = 0  # prompts built / skipped by build_prompts
    self.count_lock = threading.Lock()
    pool = symbols.get_pool(spec.setting.symbol_pool)
    self.sample_symbols = pool.sample
    if spec.setting.labels == "symbols":  # fresh symbols per prompt: tokenize the pool too
      self.pieces.prime(pool.integers + pool.letter_strings + pool.words)

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
    if self.compose and self._checked < _COMPOSE_CHECKS:
      # Composed ids must equal whole-prompt tokenization; verify on the first prompts.
      self._checked += 1
      if list(prompt.input_ids) != self.pieces.encode_full(prompt.inputs):
        logging.warning("%s: this vocabulary does not tokenize prompts piecewise; "
                        "tokenizing whole prompts instead (slower)", self.spec.task_name)
        self.compose = False
        return self.build(position, seed, max_input_tokens)
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
  """Forgets loaded data and prompt builders (after moving a data directory)."""
  sources.clear_caches()
  for cached in (exemplar_data, queries, _builder):
    cached.cache_clear()


class QuerySource(seqio.DataSource):
  """Yields {"query": position, "split": split} per query of a split; data is read lazily."""

  def __init__(self, spec: PromptSpec):
    self.spec = spec
    super().__init__(splits=[s for s, _ in spec.query_splits], num_input_examples=None,
                     caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  @property
  def performs_internal_shuffling(self) -> bool:
    # The query order is a full permutation per epoch and prompts are random anyway, so
    # seqio's 1000-example post-preprocessing shuffle buffer (filled per task before the
    # first example of a mixture) would only add start-up latency.
    return True

  def num_input_examples(self, split: str) -> int:
    return len(queries(self.spec, split))

  def list_shards(self, split: str):
    return [split]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1):
    del sequence_length, use_cached
    validate(self.spec, split)  # eagerly, before any tf.data op runs
    n = self.num_input_examples(split)
    ds = tf.data.Dataset.range(n)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs) if num_epochs != 1 else ds
    return ds.map(lambda i: {"query": tf.cast(i, tf.int32), "split": tf.constant(split)})


@functools.cache
def _builder(spec: PromptSpec, split: str, max_input_tokens: int, vocab_spec: str):
  del vocab_spec  # part of the cache key: a new vocabulary needs a new token counter
  return PromptBuilder(spec, split, max_input_tokens)


# Prompts built per Python call: one tf.numpy_function call per example cost more than the
# prompt itself (benchmarks/prompts.py); a batch amortises the call and the tensor copies.
BUILD_BATCH = 32
_NUM_META = 6  # template, k, num_dropped, gold, k_drawn, query_index


def build_batch(builder: PromptBuilder, positions, seeds,
                model_length: int | None = None) -> tuple:
  """Builds the prompts of a batch of queries as flat arrays for one numpy_function call.

  Example: positions [17, 4], seeds [[5, 9], [6, 1]] (seqio's per-example seed pairs)
    -> (inputs_str [2] bytes, targets_str [2] bytes, input ids of both prompts concatenated,
        their lengths [2], target ids concatenated, their lengths [2], meta [2, 6] int32
        (template, k, num_dropped, gold, k_drawn, query_index), labels_json [2] bytes)
  A prompt that cannot fit is counted in SKIPPED and left empty with gold -1 (filtered);
  when none of a split's queries fits, NoPromptFitsError stops the stream (a repeating
  stream would otherwise filter forever). `model_length` (decoder-only) fits prompt + EOS +
  every label option + EOS to that length instead of the prompt to the builder's budget.
  """
  n = len(positions)
  inputs_str, targets_str, labels_json = (np.empty(n, object) for _ in range(3))
  input_ids, target_ids = [], []
  input_lengths, target_lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
  meta = np.zeros((n, _NUM_META), np.int32)
  for i, (position, seed) in enumerate(zip(positions, seeds)):
    seed = tuple(int(s) for s in seed)
    try:
      # all_options: every label option fits after the prompt, so a rank twin scores the
      # same prompt for each option (and the exact-match task sees that prompt too).
      p = (builder.build_sequence(int(position), seed, model_length, all_options=True)
           if model_length else builder.build(int(position), seed))
    except prompts.PromptError:
      SKIPPED[builder.spec.task_name] += 1
      with builder.count_lock:  # tf.data builds batches on several threads
        builder.num_unfit += 1
        none_fit = not builder.num_fitted and builder.num_unfit >= len(builder.queries)
      if none_fit:
        raise NoPromptFitsError(
            f"task {builder.spec.task_name} ({builder.split}): none of its prompts fits "
            f"{model_length or builder.max_input_tokens + 1} tokens even with one exemplar "
            f"per class ({len(builder.queries)} of {len(builder.queries)} queries skipped); "
            "raise TASK_FEATURE_LENGTHS") from None
      inputs_str[i], targets_str[i], labels_json[i] = b"", b"", b"{}"
      meta[i, 3] = meta[i, 5] = -1
      continue
    with builder.count_lock:
      builder.num_fitted += 1
    m = p.metadata
    inputs_str[i], targets_str[i] = p.inputs.encode(), p.targets.encode()
    labels_json[i] = json.dumps({"symbols": m["symbols"], "options": m["options"]}).encode()
    ids, targets = p.input_ids, builder.pieces(p.targets)
    input_ids.append(ids)
    target_ids.append(targets)
    input_lengths[i], target_lengths[i] = len(ids), len(targets)
    meta[i] = (m["template"], m["k"], m["num_dropped"], m["gold"], m["k_drawn"],
               m["query_index"])
  flat = lambda parts: np.concatenate(
      [np.frombuffer(a, np.int32) if isinstance(a, array.array) else np.asarray(a, np.int32)
       for a in parts]) if parts else np.zeros([0], np.int32)
  return (inputs_str, targets_str, flat(input_ids), input_lengths, flat(target_ids),
          target_lengths, meta, labels_json)


def build_prompts(dataset: tf.data.Dataset, sequence_length=None, output_features=None, *,
                  spec: PromptSpec) -> tf.data.Dataset:
  """Preprocessor: {"query", "split"} -> prompt features; prompts that cannot fit are
  skipped and counted in SKIPPED. sequence_length {"inputs": I, ...} fits the prompt + EOS
  to I; the decoder-only single length {"targets": L} fits prompt + EOS + answer + EOS to L
  (the longest label option standing for the answer).

  Each example gets its seed from seqio (map_over_dataset), exactly as a per-example map
  would; prompts are then built BUILD_BATCH at a time and unbatched, so the stream is the
  same example for example.
  """
  del output_features
  # Decoder-only lengths {"targets": L}: prompt + EOS + answer + EOS fit L together
  # (decoder_packing.single_length); else the prompt + EOS fits "inputs".
  model_length = decoder_packing.single_length(sequence_length)
  length = model_length or (sequence_length or {}).get("inputs") or DEFAULT_INPUT_LENGTH
  budget = length - 1  # room for EOS

  # The map functions have no Python control flow: autograph would only slow tracing
  # (18 tasks x 3 functions took ~10 s of a mixture's construction).
  @seqio.map_over_dataset(num_seeds=1)
  @tf.autograph.experimental.do_not_convert
  def attach_seed(ex, seed):
    return {"query": ex["query"], "split": ex["split"], "seed": tf.stack(seed)}

  def make(positions, splits, seeds):
    builder = _builder(spec, splits[0].decode(), budget, vocab_lib.current_spec())
    return build_batch(builder, positions, seeds, model_length)

  @tf.autograph.experimental.do_not_convert
  def build(batch):
    out = tf.numpy_function(
        make, [batch["query"], batch["split"], batch["seed"]],
        [tf.string, tf.string, tf.int32, tf.int64, tf.int32, tf.int64, tf.int32, tf.string],
        stateful=False)
    inputs_str, targets_str, inputs, input_lengths, targets, target_lengths, meta, labels = out
    for tensor, shape in ((inputs_str, [None]), (targets_str, [None]), (inputs, [None]),
                          (input_lengths, [None]), (targets, [None]), (target_lengths, [None]),
                          (meta, [None, _NUM_META]), (labels, [None])):
      tensor.set_shape(shape)
    return {
        "inputs_pretokenized": inputs_str, "targets_pretokenized": targets_str,
        "inputs": tf.RaggedTensor.from_row_lengths(inputs, input_lengths),
        "targets": tf.RaggedTensor.from_row_lengths(targets, target_lengths),
        "template": meta[:, 0], "k": meta[:, 1], "num_dropped": meta[:, 2],
        "gold": meta[:, 3], "k_drawn": meta[:, 4], "labels_json": labels,
        "query": batch["query"],
        "query_index": meta[:, 5],  # the query's index in its dataset split
        "task": tf.fill(tf.shape(batch["query"]), spec.task_name),
    }

  ds = attach_seed(dataset).batch(BUILD_BATCH)
  ds = ds.map(build, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  return ds.filter(tf.autograph.experimental.do_not_convert(lambda ex: ex["gold"] >= 0))
