"""Training batches: seqio mixture -> the model family's feature converter (best-fit packing,
symbol_tuning.data.packing) -> host batches.

The stream is a pure function of (mixture, lengths, seed, host). Its position is saved with
every checkpoint (tf.data saves the iterator: shuffle orders, seeds, mixing and packing
buffers), so resuming at step s restores it in seconds whatever s is, and the resumed run
sees exactly the batches an uninterrupted run would have seen. A checkpoint without it
(written before this existed, or at Ctrl-C mid-step) resumes by rebuilding the stream and
skipping s batches: the same batches, just slower.
"""
import dataclasses
import json
import shutil
import tempfile

import jax
import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning import paths
from symbol_tuning.data import pipeline
from symbol_tuning.models import registry


class DataError(ValueError):
  """The data pipeline stopped (the message says which task and why)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What t5x calls a DatasetConfig, for training."""

  mixture_or_task_name: str  # a registered seqio task or mixture
  task_feature_lengths: dict  # {"inputs": 2048, "targets": 512}; one-sequence families
  #   also {"targets": L}: prompt + answer + EOSs fit L (packing.single_length)
  batch_size: int  # global batch (all hosts)
  split: str = "train"
  seed: int = 0  # fixes the stream (prompts, order, mixing); resume needs it fixed
  pack: bool = True  # pack several examples into each 2048/512 row, as t5x does
  pack_buffer: int = 256  # examples best-fit packed together (symbol_tuning.data.packing)
  shuffle: bool = True
  family: str = "t5"  # the model family (models.registry) whose converter and features apply
  use_cached: bool = False  # read a cached twin from seqio's cache dirs (data/caching.py)


def check_name(name: str) -> None:
  import difflib  # pylint: disable=g-import-not-at-top

  known = list(seqio.MixtureRegistry.names()) + list(seqio.TaskRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    raise ValueError(f"MIXTURE_OR_TASK_NAME {name!r} is not a registered seqio task or "
                     f"mixture" + (f"; did you mean {', '.join(close)}?" if close else ""))


def mixture_to_read(name: str, lengths: dict, use_cached: bool, cache_dirs=()) -> str:
  """The task or mixture the trainer reads: `name`; with `use_cached`, its cached twin at
  `lengths` (data/caching.py), registered here when `name` is the uncached one, with
  `cache_dirs` added to seqio's global cache dirs (as t5x's --seqio_additional_cache_dirs).

  Example: ("symbol_tuning_bigbench", {"inputs": 1024, "targets": 32}, True, ["gs://b/c"])
    -> "symbol_tuning_bigbench_i1024_t32", read from gs://b/c.
  """
  if not use_cached:
    return name
  from symbol_tuning.data import caching  # pylint: disable=g-import-not-at-top

  if cache_dirs:
    seqio.add_global_cache_dirs([str(d) for d in cache_dirs])
  check_name(name)
  if not name.endswith(caching.cached_name("", lengths)):  # else the twin itself
    name = caching.register_cached(name, lengths, splits=("train",))
  provider = seqio.get_mixture_or_task(name)
  missing = [task.name for task in getattr(provider, "tasks", [provider])
             if task.cache_dir is None]
  if missing:
    raise DataError(f"USE_CACHED_TASKS: {len(missing)} task(s) of {name!r} are not cached in "
                    f"any of seqio's cache dirs {seqio.utils.get_global_cache_dirs()} "
                    f"(SEQIO_CACHE_DIRS), e.g. {missing[0]!r}; build them with seqio's "
                    "cache_tasks_main (README, Data at scale)")
  return name


class HostBatches:
  """Iterator of a host's numpy batches (batch_size / hosts rows each), from its own shard of
  every task's examples (seqio.ShardInfo; this process's by default), whose position can be
  saved and restored (`save` / `restore`, used by the trainer's checkpoints).

  Example: it = HostBatches(cfg); next(it) -> {"encoder_input_tokens": int32 [rows, 2048],
  ...}; it.save(d) at step 7; later HostBatches(cfg).restore(d, 7) yields batch 8 next.
  """

  def __init__(self, cfg: DataConfig, start_step: int = 0, host: int | None = None,
               hosts: int | None = None):
    check_name(cfg.mixture_or_task_name)
    self.cfg = cfg
    self.hosts = jax.process_count() if hosts is None else hosts
    self.host = jax.process_index() if host is None else host
    self.position = start_step  # batches consumed since the start of the stream
    ds = _dataset(cfg, self.host, self.hosts)
    if start_step:
      ds = ds.skip(start_step)  # the slow path: every skipped prompt is rebuilt
    self._iterator = iter(ds.prefetch(2))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    """The next batch; a failure inside the pipeline (e.g. no prompt of a task fits) is a
    DataError, raised once the tf.data iterator is released."""
    failure = None
    try:
      batch = next(self._iterator)
    except tf.errors.OpError as e:  # raised by a preprocessor
      failure = pipeline.python_error(e)
    if failure is not None:
      self._iterator = None  # a live tf.data iterator in a traceback hangs the process at exit
      raise DataError(f"the training data of {self.cfg.mixture_or_task_name} failed: {failure}")
    self.position += 1
    return {k: np.asarray(v, np.int32) for k, v in batch.items()}

  def signature(self) -> dict:
    """What the saved position depends on: restoring into another stream is refused."""
    return {"mixture_or_task_name": self.cfg.mixture_or_task_name,
            "task_feature_lengths": dict(sorted(self.cfg.task_feature_lengths.items())),
            "batch_size": self.cfg.batch_size, "split": self.cfg.split, "seed": self.cfg.seed,
            "pack": self.cfg.pack, "pack_buffer": self.cfg.pack_buffer,
            "shuffle": self.cfg.shuffle, "family": self.cfg.family,
            "hosts": self.hosts}

  def save(self, directory) -> None:
    """Writes this host's iterator state into `directory` (one file set per host; a local
    folder or gs://)."""
    directory = paths.path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # tf.train.Checkpoint writes through TF's own filesystem; staging it locally and copying
    # it with epath keeps every gs:// write on one client (and testable on an emulator).
    local = tempfile.mkdtemp(prefix="symbol_tuning_data_")
    try:
      tf.train.Checkpoint(iterator=self._iterator).write(f"{local}/host_{self.host}")
      paths.upload_dir(local, directory)
    finally:
      shutil.rmtree(local, ignore_errors=True)
    if self.host == 0:
      (directory / "signature.json").write_text(json.dumps(
          {**self.signature(), "position": self.position}))

  def restore(self, directory, position: int) -> bool:
    """Restores the state saved at `position` batches; False (nothing changed) if it was
    saved for another stream or is missing, so the caller falls back to skipping."""
    directory = paths.path(directory)
    try:
      saved = json.loads((directory / "signature.json").read_text())
    except (OSError, ValueError):
      return False
    if saved.pop("position", None) != position or saved != self.signature():
      return False
    names = [p.name for p in directory.iterdir() if p.name.startswith(f"host_{self.host}.")]
    local = paths.download_files(directory, names)
    try:
      tf.train.Checkpoint(iterator=self._iterator).read(
          f"{local}/host_{self.host}").assert_consumed()
    finally:
      shutil.rmtree(local, ignore_errors=True)
    self.position = position
    return True


def _dataset(cfg: DataConfig, host: int, hosts: int) -> tf.data.Dataset:
  ds = seqio.get_dataset(
      cfg.mixture_or_task_name, task_feature_lengths=cfg.task_feature_lengths,
      dataset_split=cfg.split, shuffle=cfg.shuffle, num_epochs=None, seed=cfg.seed,
      use_cached=cfg.use_cached,
      shard_info=seqio.ShardInfo(index=host, num_shards=hosts) if hosts > 1 else None,
      feature_converter=feature_converter(cfg))
  features = registry.get_family(cfg.family).model_features
  if not set(ds.element_spec) <= set(features):  # a per-row map only where there is more
    ds = ds.map(lambda ex: {k: ex[k] for k in features if k in ex})
  return ds.batch(cfg.batch_size // hosts, drop_remainder=True)


def host_batches(cfg: DataConfig, start_step: int = 0, host: int | None = None,
                 hosts: int | None = None) -> HostBatches:
  """A host's batches from `start_step` on (rebuilding the skipped ones); this process's
  by default."""
  return HostBatches(cfg, start_step, host, hosts)


def feature_converter(cfg: DataConfig) -> seqio.FeatureConverter:
  return registry.get_family(cfg.family).feature_converter(pack=cfg.pack,
                                                            buffer_size=cfg.pack_buffer)
