"""The seqio side of prompt building: a source of queries and the prompt preprocessor.

A task is `QuerySource` (which examples are queries) + `build_prompts` (exemplars,
template, symbols, fitting, tokenization, EOS; needs sequence_length).
Example (task symbol_tuning.bigbench.navigate, split train):
  source:       {"query": 17, "split": "train", "seeds": (5, 9)}
  build_prompts -> {"inputs_pretokenized": "X = Turn left. Take 3 steps.\\nY = 8270\\n\\n...
                    \\nX = Always face forward. ...\\nY =", "targets_pretokenized": "8270",
                    "inputs": [...ids..., 1], "targets": [..., 1], "template": 7, "k": 5,
                    "num_dropped": 0, "gold": 0, "symbols": '{"True": "8270", ...}', ...}
Randomness is stateless: the source hands each query the seed pair seqio's
map_over_dataset(num_seeds=1) would give its position in the whole (unsharded) stream, and
the task name and query index are folded into it, so tasks of a mixture never share draws
and a prompt is a function of (seed, task, split, query index, epoch) on any host count. The prompts themselves are
built in plain Python (`prompt_builder`), in this process or in prompt worker processes
(`prompt_workers`). No tf.data function runs per example (PromptTask, PromptMixture,
`mixing`).
"""
import collections
import contextvars
import functools
import inspect
import re
import threading

from absl import logging

import seqio
import tensorflow as tf

from symbol_tuning import tf_exit
from symbol_tuning.data import mixing, packing, prompt_builder, prompt_workers
from symbol_tuning.data import vocab as vocab_lib
# The builder's names, for the callers that know them from here.
from symbol_tuning.data.prompt_builder import (  # pylint: disable=unused-import
    BUILD_BATCH, WORKER_BUILD_BATCH, PromptSpec, exemplar_data, k_cap, queries, validate)

DEFAULT_INPUT_LENGTH = 2048
SHARD_QUERIES = 1000  # queries per source shard (QuerySource.list_shards)
# Prompts skipped because they could not fit, per task (reported by `symbol-tuning`).
SKIPPED: collections.Counter = collections.Counter()
# (task, split, length, vocabulary) -> prompts built; + ("skipped",) -> prompts skipped
_fits: collections.Counter = collections.Counter()
_fits_lock = threading.Lock()


class NoPromptFitsError(ValueError):
  """Not one prompt of a task split fits the length: a repeating stream of it would spin
  forever in its filter, so the pipeline stops with this instead."""


def python_error(error) -> str:
  """The Python exception a tf.numpy_function raised, from TensorFlow's wrapped message."""
  # Its last line: "module.path.NameError: message" (the module path is optional).
  found = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$", error.message,
                     re.MULTILINE)
  return ": ".join(found[-1]) if found else " ".join(error.message.split())[:300]


class PromptBuilder(prompt_builder.PromptBuilder):
  """prompt_builder.PromptBuilder with a seqio vocabulary (default: the chosen one)."""

  def __init__(self, spec: PromptSpec, split: str, max_input_tokens: int | None,
               vocabulary: seqio.Vocabulary | None = None):
    super().__init__(spec, split, max_input_tokens, vocab_lib.tokenizer_of(vocabulary))


def clear_caches() -> None:
  """Forgets loaded data, prompt builders and worker processes (after moving data)."""
  prompt_builder.clear_caches()
  _builder.cache_clear()
  _fits.clear()
  prompt_workers.close_all()


class QuerySource(seqio.DataSource):
  """Yields {"query": index, "split": split, "seeds": (a, b)} per query of a split; data is
  read lazily.

  A query's seeds are a pure function of (seed, split, query index, epoch): the whole
  stream (every epoch's permutation, with the seed pair seqio's map_over_dataset(num_seeds=1)
  would zip in at each position) is the same on every host, and a host's shard is taken
  from it afterwards, so the union of the shards is the one-host stream for any host count.
  Example (n=4, seed 0, 2 shards): the stream (q, seeds) = (2, s0), (0, s1), (3, s2),
  (1, s3) | (1, s4), ... ; shard 0 reads (2, s0), (3, s2), (1, s4), ... and shard 1 the rest.
  Each host reads the whole stream of query indices (integers: ~1 us each) and skips the
  others' (a shard of n queries on H hosts costs n integer reads per epoch per host).
  """

  def __init__(self, spec: PromptSpec, fixed_seed: int | None = None):
    """`fixed_seed` (cached twins, data/caching.py): the seed of every stream, whatever
    seed the caller passes (cache_tasks_main passes a different one per shard)."""
    self.spec, self.fixed_seed = spec, fixed_seed
    super().__init__(splits=[s for s, _ in spec.query_splits], num_input_examples=None,
                     caching_permitted=True)

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

  def list_shards(self, split: str) -> list[str]:
    """One shard per SHARD_QUERIES queries (what cache_tasks_main hands its workers):
    shard i of k is every k-th query of the stream from the i-th (any k gives the same
    prompts). Example: 2,500 queries -> ["train-00000-of-00003", ..., "train-00002-of-00003"].
    """
    k = max(1, -(-self.num_input_examples(split) // SHARD_QUERIES))
    return [f"{split}-{i:05d}-of-{k:05d}" for i in range(k)]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1):
    del sequence_length, use_cached
    validate(self.spec, split)  # eagerly, before any tf.data op runs
    # QueryTask passes seqio's num_epochs here: the epochs are part of the stream that is
    # sharded, so a query's seeds depend on its epoch and not on the host count.
    num_epochs = _source_epochs.get() or num_epochs
    seed = seed if self.fixed_seed is None else self.fixed_seed
    n = self.num_input_examples(split)
    ds = tf.data.Dataset.range(n, output_type=tf.int32)
    if shuffle:
      ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs) if num_epochs != 1 else ds
    # A zip, not a map: tf.data runs no function per example (a map costs ~30 us each).
    ds = tf.data.Dataset.zip({"query": ds,
                              "split": tf.data.Dataset.from_tensors(split).repeat(),
                              "seeds": _seed_datasets(seed)})
    if shard_info and shard_info.num_shards > 1:
      if seed is None:
        logging.warning("%s: no seed, so each of %d hosts draws its own query order and "
                        "prompts (set a seed for one stream across hosts)",
                        self.spec.task_name, shard_info.num_shards)
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


def builder(spec: PromptSpec, split: str, max_input_tokens: int) -> PromptBuilder:
  """The process's PromptBuilder of a task split, budget and the chosen vocabulary, made
  once: the training pipeline and every evaluation in a process share it (making one
  tokenizes the data and checks composition on probe prompts)."""
  return _builder(spec, split, max_input_tokens, vocab_lib.current_spec())


@functools.cache
def _builder(spec: PromptSpec, split: str, max_input_tokens: int, vocab_spec: str):
  del vocab_spec  # part of the cache key: a new vocabulary needs a new token counter
  return PromptBuilder(spec, split, max_input_tokens)


def _count(spec: PromptSpec, split: str, length: int, asked: int, built: int) -> None:
  """Counts skipped prompts; NoPromptFitsError once every query of a split was skipped
  and none built (a repeating stream would otherwise filter forever)."""
  skipped = asked - built
  with _fits_lock:  # tf.data builds batches on several threads
    if skipped:  # no zero entries: every task listed had prompts skipped
      SKIPPED[spec.task_name] += skipped
    key = (spec.task_name, split, length, vocab_lib.current_spec())
    _fits[key] += built
    _fits[key + ("skipped",)] += skipped
    none_fit = not _fits[key] and _fits[key + ("skipped",)] >= len(queries(spec, split))
  if none_fit:
    n = len(queries(spec, split))
    raise NoPromptFitsError(
        f"task {spec.task_name} ({split}): none of its prompts fits {length} tokens even "
        f"with one exemplar per class ({n} of {n} queries skipped); raise "
        "TASK_FEATURE_LENGTHS")


def build_prompts(dataset: tf.data.Dataset, sequence_length=None, output_features=None, *,
                  spec: PromptSpec, append_eos: bool = False) -> tf.data.Dataset:
  """Preprocessor: {"query", "split", "seeds"} (QuerySource) -> prompt features; prompts that cannot fit are
  skipped and counted in SKIPPED. sequence_length {"inputs": I, ...} fits the prompt + EOS
  to I; the decoder-only single length {"targets": L} fits prompt + EOS + answer + EOS to L
  (the longest label option standing for the answer). `append_eos` ends "inputs" and
  "targets" with EOS exactly as seqio.preprocessors.append_eos_after_trim would after this
  (the tasks do it here: one per-example tf.data map less).

  Each example comes with its seeds from QuerySource (a function of the seed, query index
  and epoch); prompts are built BUILD_BATCH at a time (WORKER_BUILD_BATCH
  in prompt workers) and unbatched, so the stream is the same example for example,
  whichever process builds them and in batches of any size. Inside a
  PromptMixture only the features the mixture keeps are built.
  """
  # One-sequence lengths {"targets": L}: prompt + EOS + answer + EOS fit L together
  # (packing.single_length); else the prompt + EOS fits "inputs".
  model_length = packing.single_length(sequence_length)
  length = model_length or (sequence_length or {}).get("inputs") or DEFAULT_INPUT_LENGTH
  budget = length - 1  # room for EOS
  eos = None
  if append_eos:
    for name in ("inputs", "targets"):
      if not output_features[name].add_eos:
        raise ValueError(f"task {spec.task_name}: append_eos, but output feature {name!r} "
                         "has add_eos=False")
    lengths = sequence_length or {}
    eos = (int(output_features["inputs"].vocabulary.eos_id), lengths.get("inputs"),
           lengths.get("targets"))
  workers = prompt_workers.num_workers()
  tokenizer = vocab_lib.tokenizer_of() if workers else None
  tf_exit.register()  # Python runs inside tf.data from here: let the process exit cleanly

  features = _requested_features.get()

  def make(positions, splits, seeds):
    split = splits[0].decode()
    if workers:
      out = prompt_workers.pool(workers, tokenizer).build_batch(
          spec, split, budget, positions, seeds, model_length, eos)
    else:
      out = prompt_builder.build_batch(builder(spec, split, budget), positions, seeds,
                                       model_length, eos)
    _count(spec, split, model_length or length, len(positions), len(out[0]))
    return out

  # No Python control flow: autograph would only slow tracing (18 tasks took ~10 s).
  @tf.autograph.experimental.do_not_convert
  def build(batch):
    out = tf.numpy_function(
        make, [batch["query"], batch["split"], tf.stack(batch["seeds"], axis=1)],
        [tf.int32, tf.string, tf.string, tf.int32, tf.int64, tf.int32, tf.int64, tf.int32,
         tf.string], stateful=False)
    (kept, inputs_str, targets_str, inputs, input_lengths, targets, target_lengths, meta,
     labels) = out
    for tensor in out:  # one entry (or token id) per kept prompt
      tensor.set_shape([None, prompt_builder.NUM_META] if tensor is meta else [None])
    # validate=False: build_batch writes each length beside its ids, and the checks'
    # assertion ops were ~9% of building a 22-task mixture's pipeline (tracing them).
    built = {
        "inputs_pretokenized": inputs_str, "targets_pretokenized": targets_str,
        "inputs": tf.RaggedTensor.from_row_lengths(inputs, input_lengths, validate=False),
        "targets": tf.RaggedTensor.from_row_lengths(targets, target_lengths, validate=False),
        "template": meta[:, 0], "k": meta[:, 1], "num_dropped": meta[:, 2],
        "gold": meta[:, 3], "k_drawn": meta[:, 4], "labels_json": labels,
        "query": tf.gather(batch["query"], kept),
        "query_index": meta[:, 5],  # the query's index in its dataset split
        "task": tf.fill(tf.shape(kept), spec.task_name),
    }
    return {k: v for k, v in built.items() if features is None or k in features}

  # Per example only zips and a batch; prompts that cannot fit are left out of their batch
  # (no per-example filter).
  ds = dataset.batch(WORKER_BUILD_BATCH if workers else BUILD_BATCH)
  return ds.map(build, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _seed_datasets(seed: int | None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """The seeds seqio.map_over_dataset(num_seeds=1) would hand each example of a
  preprocessor run under seqio.utils.map_seed_manager(seed): Dataset.random(seed) and
  Dataset.random(seed + 1), zipped in position by position (no function per example).

  Example: seed 0 -> (Dataset.random(0), Dataset.random(1)), the seeds build_prompts had
  when it drew them from seqio's seed counter itself; tests/test_pipeline_golden.py pins the
  resulting prompts. No seed: unseeded, a new stream each run, as seqio's.
  """
  if seed is None:
    return tf.data.Dataset.random(), tf.data.Dataset.random()
  return tf.data.Dataset.random(int(seed)), tf.data.Dataset.random(int(seed) + 1)


# seqio's num_epochs, handed from QueryTask.get_dataset to QuerySource.get_dataset (seqio
# repeats after the source; the source must repeat itself, before sharding). 0: not set.
_source_epochs: contextvars.ContextVar = contextvars.ContextVar("source_epochs", default=0)


# The features a mixture keeps of its tasks (None: all); read by build_prompts while
# PromptMixture builds a task's dataset.
_requested_features: contextvars.ContextVar = contextvars.ContextVar(
    "requested_features", default=None)


def requested_features() -> frozenset | None:
  """The features the mixture now building a task's dataset keeps (None: all)."""
  return _requested_features.get()


class QueryTask(seqio.Task):
  """A seqio.Task on a QuerySource: the source repeats the queries for seqio's num_epochs
  itself (before sharding, see QuerySource), so seqio reads one pass of it and does not
  cache it in memory (the pass can be endless)."""

  def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
    bound = inspect.signature(seqio.Task.get_dataset).bind(self, *args, **kwargs)
    bound.apply_defaults()
    arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
    if arguments["use_cached"] or not isinstance(self.source, QuerySource):
      return super().get_dataset(**arguments)
    token = _source_epochs.set(-1 if arguments["num_epochs"] is None
                               else arguments["num_epochs"])
    try:
      return super().get_dataset(**dict(arguments, num_epochs=1, try_in_mem_cache=False))
    finally:
      _source_epochs.reset(token)


class PromptTask(QueryTask):
  """A QueryTask whose preprocessor already trims "inputs"/"targets" to the sequence
  lengths (build_prompts with append_eos=True, exactly as append_eos_after_trim): seqio's
  own trim would be a per-example map that changes nothing."""

  def _trim_output_features(self, dataset, sequence_length):
    return dataset


class PromptMixture(seqio.Mixture):
  """A seqio.Mixture that asks its PromptTasks for the features it keeps, instead of
  dropping the rest with a per-example map (seqio's `filter_features`), and samples its
  tasks with `mixing.sample_from_datasets` (seqio's default sampling, drawn in batches).
  Other tasks are read as seqio reads them. Same examples, same order."""

  def __init__(self, *args, sample_fn=mixing.sample_from_datasets, **kwargs):
    super().__init__(*args, sample_fn=sample_fn, **kwargs)

  def get_task_dataset(self, task, output_feature_keys, *args, **kwargs):
    if not isinstance(task, PromptTask):
      return super().get_task_dataset(task, output_feature_keys, *args, **kwargs)
    # seqio's own arguments, by name, whatever their order in this seqio version; seqio
    # passes each of them to task.get_dataset under the same name.
    bound = inspect.signature(seqio.Mixture.get_task_dataset).bind(
        self, task, output_feature_keys, *args, **kwargs)
    bound.apply_defaults()
    task_args = {k: v for k, v in bound.arguments.items()
                 if k not in ("self", "task", "output_feature_keys")}
    token = _requested_features.set(frozenset(output_feature_keys))
    try:
      ds = _without_final_prefetch(task.get_dataset(**task_args))
    finally:
      _requested_features.reset(token)
    # A PromptTask whose later preprocessors add features still loses them, as in seqio.
    if not set(ds.element_spec) <= set(output_feature_keys):
      ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k in output_feature_keys},
                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def _without_final_prefetch(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` without the prefetch(AUTOTUNE) that seqio's Task.get_dataset ends with.

  In a mixture that is a thread and a hand-off per example for each of its 18 tasks, while
  the parallel map of build_prompts already builds each task's prompts ahead: without it
  the main process spent ~15% less CPU per prompt (prompt building stubbed out, three
  alternating runs). Prefetching never reorders, so the stream is the same; a dataset that
  does not end in a prefetch (another seqio version) is returned as it is.
  """
  inner = getattr(ds, "_input_dataset", None)
  if type(ds).__name__ == "_PrefetchDataset" and isinstance(inner, tf.data.Dataset):
    return inner
  return ds
