"""Cached twins of the prompt tasks, for seqio's cache_tasks_main (Apache Beam).

A prompt is fitted to its token budget while it is built (exemplars are dropped until it
fits), so what a task caches depends on its sequence lengths, and seqio allows no
preprocessor that reads `sequence_length` before a CacheDatasetPlaceholder. So each length
gets its own twin, as seqio.experimental.add_fully_cached_task makes them: the lengths are
bound, the whole pipeline runs before the placeholder, and the twin can only be read from
its cache, at those lengths. Names follow seqio's:
  register_cached("symbol_tuning_bigbench", {"inputs": 512, "targets": 32})
    -> "symbol_tuning_bigbench_i512_t32" (a mixture of the 18 tasks'
       "symbol_tuning.bigbench.<task>_i512_t32" twins, the same rates)

What the cache holds: every query of each split once (epoch 0), its prompt built with seed
CACHE_SEED, whatever seeds cache_tasks_main hands its shards (it gives each shard its own):
exactly the prompts task.get_dataset(lengths, shuffle=False, seed=CACHE_SEED, num_epochs=1)
yields, in another order (tests/test_caching.py). Read back, every epoch is that epoch's
prompts again: the on-the-fly pipeline draws new ones each epoch. Mixing rates of a cached
mixture count the cached prompts (seqio's mixing_rate_num_examples reads the cache's stats),
so prompts that could not fit no longer count.

`symbol_tuning.data.cached_tasks` registers twins of every tuning, instruction and
evaluation mixture at the lengths in $SYMBOL_TUNING_CACHE_LENGTHS (for --module_import).
"""
import dataclasses
import functools
import json
from typing import Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from symbol_tuning.data import pipeline

CACHE_SEED = 0
PARSE_BATCH = 256  # cached examples parsed per tf.io.parse_example call


class CachedPromptTask(pipeline.PromptTask):
  """A PromptTask twin whose cache is read PARSE_BATCH records per parse, and only the
  features its PromptMixture keeps: seqio's reader parses every feature of each record in a
  map of its own, then casts them in another (benchmarks/cache.py measures both). Same
  examples, same order."""

  def _get_cached_source(self, split, file_shuffle_buffer_size=None):
    source = super()._get_cached_source(split, file_shuffle_buffer_size)
    source._reader = _batched_reader(  # pylint: disable=protected-access
        self.cache_dir, split, pipeline.requested_features())
    return source


def _batched_reader(cache_dir: str, split: str, wanted):
  """TFRecord files -> examples, as seqio's _CachedDataSource reads them, parsed in batches
  (variable-length features as ragged rows, so no padding); `wanted` features only."""
  with tf.io.gfile.GFile(seqio.utils.get_cached_info_path(cache_dir, split)) as f:
    features = json.load(f)["features"]
  if wanted is not None:
    features = {k: v for k, v in features.items() if k in wanted}
  stored = lambda dtype: "int64" if dtype in ("int32", "bool") else dtype  # as tf.Example holds them
  description = {}
  for key, info in features.items():
    if info["shape"] and any(d is None for d in info["shape"][1:]):
      raise ValueError(f"cached feature {key!r} has shape {info['shape']}: only scalars and "
                       "1-D sequences are read in batches")
    description[key] = (tf.io.RaggedFeature(stored(info["dtype"]), value_key=key)
                        if info["shape"] else tf.io.FixedLenFeature([], stored(info["dtype"])))

  def parse(records):
    parsed = tf.io.parse_example(records, description)
    return {k: tf.cast(v, features[k]["dtype"]) for k, v in parsed.items()}

  def read(filepattern):
    ds = tf.data.TFRecordDataset(filepattern).batch(PARSE_BATCH)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

  return read


def cached_name(name: str, lengths: Mapping[str, int]) -> str:
  """seqio's fully cached name: shortest distinct prefixes of the feature names + lengths.

  Example: ("symbol_tuning_bigbench", {"inputs": 512, "targets": 32})
    -> "symbol_tuning_bigbench_i512_t32"; a decoder-only {"targets": 544} -> "..._544".
  """
  width = 0
  while len({feature[:width] for feature in lengths}) != len(lengths):
    width += 1
  return f"{name}_" + "_".join(f"{feature[:width]}{length}"
                               for feature, length in lengths.items())


@gin.configurable
def register_cached(name: str = gin.REQUIRED, lengths: Mapping[str, int] = gin.REQUIRED,
                    seed: int = CACHE_SEED, splits: Sequence[str] | None = None) -> str:
  """Registers (once) the cached twin of a prompt task or mixture at `lengths`, with the
  task splits in `splits` (None: all); returns its name. From gin (t5x with USE_CACHED_TASKS = True):
    MIXTURE_OR_TASK_NAME = @symbol_tuning.data.caching.register_cached()
    symbol_tuning.data.caching.register_cached.name = 'symbol_tuning_bigbench'
    symbol_tuning.data.caching.register_cached.lengths = %TASK_FEATURE_LENGTHS
  """
  lengths = dict(lengths)
  twin = cached_name(name, lengths)
  if twin in seqio.TaskRegistry.names() or twin in seqio.MixtureRegistry.names():
    return twin
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    # The same parts at the same rates (seqio's add_fully_cached_mixture reads the same
    # private map): a rate function is called on the twin, so it counts cached prompts.
    parts = [(register_cached(part, lengths, seed, splits), rate)
             for part, rate in provider._task_to_rate.items()]  # pylint: disable=protected-access
    seqio.MixtureRegistry.add(twin, parts, mixture_cls=pipeline.PromptMixture)
    return twin
  source = provider.source
  if not isinstance(source, pipeline.QuerySource):
    raise ValueError(f"register_cached: task {name!r} does not build prompts (its source is "
                     f"a {type(source).__name__}); only prompt tasks have cached twins")
  preprocessors = [_bind_lengths(p, lengths) for p in provider.preprocessors]
  spec = source.spec
  if splits is not None:  # the same task name (folded into every seed): the same prompts
    spec = dataclasses.replace(spec, query_splits=tuple(
        (task_split, data_split) for task_split, data_split in spec.query_splits
        if task_split in splits))
  seqio.TaskRegistry.add(
      twin, task_cls=(CachedPromptTask if isinstance(provider, pipeline.PromptTask)
                      else type(provider)),
      source=pipeline.QuerySource(spec, fixed_seed=seed),
      preprocessors=preprocessors + [seqio.CacheDatasetPlaceholder(required=True),
                                     functools.partial(_check_lengths, twin=twin,
                                                       lengths=lengths)],
      output_features=provider.output_features, postprocess_fn=provider.postprocessor,
      metric_fns=list(provider.metric_fns), shuffle_buffer_size=None)
  return twin


def _bind_lengths(preprocessor, lengths: dict):
  """`preprocessor` with sequence_length bound, under a signature without it (seqio refuses
  a preprocessor that takes sequence_length before the placeholder)."""
  import inspect  # pylint: disable=g-import-not-at-top

  parameters = inspect.signature(preprocessor).parameters

  def bound(dataset, output_features):
    kwargs = {}
    if "sequence_length" in parameters:
      kwargs["sequence_length"] = lengths
    if "output_features" in parameters:
      kwargs["output_features"] = output_features
    return preprocessor(dataset, **kwargs)

  return bound


def _check_lengths(dataset, sequence_length, *, twin: str, lengths: dict):
  """After the cache: the twin is read at its own lengths only (or None)."""
  if sequence_length is not None and dict(sequence_length) != lengths:
    raise ValueError(f"cached task {twin!r} holds prompts fitted to {lengths}; it was asked "
                     f"for {dict(sequence_length)}: cache the task at those lengths "
                     "(register_cached) or ask for these")
  return dataset
