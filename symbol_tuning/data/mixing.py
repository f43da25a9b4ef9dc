"""Mixing tasks: seqio's default sampling, with the task of each example drawn in batches.

seqio mixes with tf.data.Dataset.sample_from_datasets(..., stop_on_empty_dataset=True). It
draws each example's dataset with a per-example tf.data function (stateless_multinomial on
a pair of seeds from Dataset.random(seed)). `sample_from_datasets` here draws the same
choices from the same seed pairs, 256 examples per numpy call, and hands them to
tf.data's own directed interleave (Dataset.choose_from_datasets): the same examples in the
same order. tests/test_mixing.py checks that against TensorFlow's op, seed for seed;
benchmarks/prompts.py measures the CPU each adds per element (the README's table).

Example: datasets A = [A0, A1, ...] and B = [B0, ...], weights [0.75, 0.25], seed 3
  -> A0 A1 A2 A3 A4 A5 A6 B0 A7 A8 ..., as TensorFlow's own sample_from_datasets gives.
"""
import numpy as np
import tensorflow as tf

from symbol_tuning import tf_exit

CHOICES_PER_CALL = 256  # examples whose dataset one numpy call draws

# Philox4x32-10 (Salmon et al. 2011), as TensorFlow's CPU kernels run it.
_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_KEY_STEPS = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))
_LOW32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
# TensorFlow's key for scrambling a stateless seed (GenerateKey in stateless_random_ops.cc).
_SEED_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)


def _philox(counter, key):
  """One Philox4x32-10 block per column: counter 4 and key 2 uint64 arrays of 32-bit
  values -> 4 such arrays."""
  c0, c1, c2, c3 = counter
  k0, k1 = key
  for _ in range(10):
    p0, p1 = _MULTIPLIERS[0] * c0, _MULTIPLIERS[1] * c2
    c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _LOW32, (p0 >> _32) ^ c3 ^ k1, p0 & _LOW32
    k0, k1 = (k0 + _KEY_STEPS[0]) & _LOW32, (k1 + _KEY_STEPS[1]) & _LOW32
  return c0, c1, c2, c3


def stateless_choices(logits: np.ndarray, seeds: np.ndarray) -> np.ndarray:
  """tf.random.stateless_categorical(logits[None], 1, seed)[0, 0] for each seed pair.

  Example: logits log([0.75, 0.25]) (float32), seeds [[0, 0], [1, 2], [3, 4], [5, 6]]
    -> [0, 1, 1, 0], TensorFlow's CPU draws exactly (the seed scrambled into a Philox key,
    one double from the first block, inverted through the cumulative distribution in
    float64).
  """
  seeds = np.ascontiguousarray(seeds, np.int64).view(np.uint64).reshape(-1, 2)
  n = len(seeds)
  counter = (seeds[:, 0] & _LOW32, seeds[:, 0] >> _32, seeds[:, 1] & _LOW32, seeds[:, 1] >> _32)
  mix = _philox(counter, tuple(np.full(n, k, np.uint64) for k in _SEED_SCRAMBLE_KEY))
  zero = np.zeros(n, np.uint64)
  block = _philox((zero, zero, mix[2], mix[3]), (mix[0], mix[1]))
  # Two 32-bit draws -> a double in [0, 1): 52 bits of mantissa (Uint64ToDouble).
  mantissa = ((block[0] & np.uint64(0xFFFFF)) << _32) | block[1]
  uniform = ((np.uint64(1023) << np.uint64(52)) | mantissa).view(np.float64) - 1.0
  logits = np.asarray(logits).astype(np.float64)
  cdf = np.cumsum(np.exp(logits - logits.max()))
  return np.searchsorted(cdf, uniform * cdf[-1], side="right").astype(np.int64)


def sample_from_datasets(datasets, weights, seed) -> tf.data.Dataset:
  """tf.data.Dataset.sample_from_datasets(datasets, weights, seed,
  stop_on_empty_dataset=True) (seqio.Mixture's default sample_fn), with no function run
  per example. Falls back to TensorFlow's op where this cannot be the same: no seed (each
  run draws its own), a tensor seed, or weights that are a Dataset or a tensor."""
  if (seed is None or isinstance(seed, tf.Tensor) or isinstance(weights, tf.data.Dataset)
      or isinstance(weights, tf.Tensor) or len(datasets) != len(weights)):
    return tf.data.Dataset.sample_from_datasets(datasets, weights, seed,
                                                stop_on_empty_dataset=True)
  # As TensorFlow: datasets of weight 0 never come up; one left is returned as it is.
  kept = [(ds, w) for ds, w in zip(datasets, weights) if w > 0]
  if not kept:
    return datasets[0].take(0)
  if len(kept) == 1:
    return kept[0][0]
  datasets = [ds for ds, _ in kept]
  # The logits TensorFlow's op computes (float32 for Python floats), to the bit.
  logits = tf.math.log(tf.convert_to_tensor([w for _, w in kept])).numpy()
  if not np.all(np.isfinite(logits)):
    return tf.data.Dataset.sample_from_datasets(datasets, [w for _, w in kept], seed,
                                                stop_on_empty_dataset=True)
  tf_exit.register()  # Python runs inside tf.data from here: let the process exit cleanly

  @tf.autograph.experimental.do_not_convert
  def choose(seeds):
    choices = tf.numpy_function(lambda s: stateless_choices(logits, s), [seeds], tf.int64,
                                stateful=False)
    return tf.ensure_shape(choices, [CHOICES_PER_CALL])

  # The seed pairs TensorFlow's op draws (Dataset.random(seed).batch(2)), 256 pairs a call.
  selector = (tf.data.Dataset.random(seed).batch(2 * CHOICES_PER_CALL)
              .map(choose).unbatch())
  return tf.data.Dataset.choose_from_datasets(datasets, selector,
                                              stop_on_empty_dataset=True)
