"""Training batches: seqio mixture -> best-fit packing (symbol_tuning.packing) -> host batches.

The stream is a pure function of (mixture, lengths, seed, host): resuming at step s
rebuilds it and skips s batches, so a resumed run sees exactly the batches an
uninterrupted run would have seen (the prompts of skipped batches are rebuilt, not stored).
"""
import dataclasses

import jax
import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning import decoder_packing, packing, pipeline

FEATURES = ("encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens",
            "decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids",
            "encoder_positions", "decoder_positions")
# Decoder-only rows: prompt + answer in one sequence (seqio PrefixLM features).
DECODER_ONLY_FEATURES = ("decoder_target_tokens", "decoder_input_tokens",
                         "decoder_loss_weights", "decoder_segment_ids", "decoder_positions",
                         "decoder_causal_attention")


class DataError(ValueError):
  """The data pipeline stopped (the message says which task and why)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What t5x calls a DatasetConfig, for training."""

  mixture_or_task_name: str  # a registered seqio task or mixture
  task_feature_lengths: dict  # {"inputs": 2048, "targets": 512}; decoder-only also
  #   {"targets": L}: prompt + answer + EOSs fit L (decoder_packing.single_length)
  batch_size: int  # global batch (all hosts)
  split: str = "train"
  seed: int = 0  # fixes the stream (prompts, order, mixing); resume needs it fixed
  pack: bool = True  # pack several examples into each 2048/512 row, as t5x does
  pack_buffer: int = 256  # examples best-fit packed together (symbol_tuning.packing)
  shuffle: bool = True
  decoder_only: bool = False  # one sequence per example (decoder_packing) instead of enc/dec


def check_name(name: str) -> None:
  import difflib  # pylint: disable=g-import-not-at-top

  known = list(seqio.MixtureRegistry.names()) + list(seqio.TaskRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    raise ValueError(f"MIXTURE_OR_TASK_NAME {name!r} is not a registered seqio task or "
                     f"mixture" + (f"; did you mean {', '.join(close)}?" if close else ""))


def host_batches(cfg: DataConfig, start_step: int = 0):
  """Iterator of this host's numpy batches (batch_size / process_count rows each); a
  failure inside the pipeline (e.g. no prompt of a task fits) is a DataError."""
  check_name(cfg.mixture_or_task_name)
  hosts, host = jax.process_count(), jax.process_index()
  ds = seqio.get_dataset(
      cfg.mixture_or_task_name, task_feature_lengths=cfg.task_feature_lengths,
      dataset_split=cfg.split, shuffle=cfg.shuffle, num_epochs=None, seed=cfg.seed,
      shard_info=seqio.ShardInfo(index=host, num_shards=hosts) if hosts > 1 else None,
      feature_converter=feature_converter(cfg))
  features = DECODER_ONLY_FEATURES if cfg.decoder_only else FEATURES
  ds = ds.map(lambda ex: {k: ex[k] for k in features if k in ex})
  ds = ds.batch(cfg.batch_size // hosts, drop_remainder=True)
  if start_step:
    ds = ds.skip(start_step)
  ds = ds.prefetch(2)
  iterator, failure = ds.as_numpy_iterator(), None
  while failure is None:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:  # raised by a preprocessor, e.g. no prompt fits
      failure = pipeline.python_error(e)
      break
    yield {k: np.asarray(v, np.int32) for k, v in batch.items()}
  del iterator, ds  # a live tf.data iterator in a traceback hangs the process at exit
  raise DataError(f"the training data of {cfg.mixture_or_task_name} failed: {failure}")


def feature_converter(cfg: DataConfig) -> seqio.FeatureConverter:
  if cfg.decoder_only:
    return decoder_packing.BestFitPrefixLMFeatureConverter(pack=cfg.pack,
                                                           buffer_size=cfg.pack_buffer)
  return packing.BestFitEncDecFeatureConverter(pack=cfg.pack, buffer_size=cfg.pack_buffer)


def batch_counts(batch) -> tuple[int, int]:
  """(examples, non-padding tokens) of a host batch, packed or not, either layout.

  Example: a packed decoder-only batch with segment ids [[1, 1, 2, 0], [1, 1, 1, 0]]
    -> (3, 6)
  """
  segments = batch.get("encoder_segment_ids", batch.get("decoder_segment_ids"))
  first = batch.get("encoder_input_tokens", batch["decoder_target_tokens"])
  examples = int(segments.max(axis=1).sum()) if segments is not None else len(first)
  if "encoder_input_tokens" in batch:
    tokens = int((batch["encoder_input_tokens"] > 0).sum()
                 + (batch["decoder_target_tokens"] > 0).sum())
  elif segments is not None:
    tokens = int((segments > 0).sum())
  else:
    tokens = int((batch["decoder_target_tokens"] > 0).sum())
  return examples, tokens
