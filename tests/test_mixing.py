"""mixing.sample_from_datasets draws exactly what TensorFlow's sample_from_datasets draws."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from symbol_tuning.data import mixing, pipeline


@pytest.mark.parametrize("weights", [[0.75, 0.25], [1.0, 2.0, 3.0, 0.5, 7.0],
                                     list(np.linspace(0.01, 1.0, 18))])
def test_choices_equal_tensorflows_stateless_categorical(weights):
  logits = tf.math.log(tf.constant(weights, tf.float32))
  seeds = np.random.RandomState(len(weights)).randint(
      np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=(1500, 2), dtype=np.int64)
  seeds[:4] = [[0, 0], [-1, -1], [1, 2], [np.iinfo(np.int64).max, np.iinfo(np.int64).min]]
  want = [int(tf.random.stateless_categorical(logits[None], 1, s, dtype=tf.int64)[0, 0])
          for s in seeds]
  np.testing.assert_array_equal(mixing.stateless_choices(logits.numpy(), seeds), want)


def test_choices_docstring_example():
  logits = tf.math.log(tf.constant([0.75, 0.25])).numpy()
  seeds = np.array([[0, 0], [1, 2], [3, 4], [5, 6]])
  assert mixing.stateless_choices(logits, seeds).tolist() == [0, 1, 1, 0]


def _elements(ds, n=None):
  ds = ds if n is None else ds.take(n)
  return [tuple(np.asarray(x).tolist()) for x in ds.as_numpy_iterator()]


def _source(tag: int, n: int | None) -> tf.data.Dataset:
  return tf.data.Dataset.range(10**9 if n is None else n).map(lambda i: (tag, i))


@pytest.mark.parametrize("lengths,weights,seed", [
    ((None, None, None), [0.5, 0.3, 0.2], 0),  # infinite streams, as a training mixture
    ((None, None), [0.9, 0.1], 12345),
    ((40, 700, 300), [1.0, 5.0, 2.0], 7),  # finite: stops at the first empty one, as TF
    ((None, 50, None), [1.0, 0.0, 3.0], 3),  # a zero weight never comes up
    ((None, 30), [0.0, 1.0], 3),  # one left: that dataset as it is
    ((None, None), [0.6, 0.4], None),  # no seed: TensorFlow's own op
])
def test_same_stream_as_tensorflows_sample_from_datasets(lengths, weights, seed):
  make = lambda: [_source(tag, n) for tag, n in enumerate(lengths)]
  want = tf.data.Dataset.sample_from_datasets(make(), weights, seed,
                                              stop_on_empty_dataset=True)
  got = mixing.sample_from_datasets(make(), weights, seed)
  if seed is None:  # TensorFlow's op, drawing anew each run: check the mixing rates
    tags = [tag for tag, _ in _elements(got, 4000)]
    assert got.element_spec == want.element_spec
    np.testing.assert_allclose(np.bincount(tags) / len(tags), weights, atol=0.04)
    return
  take = None if all(lengths) else 3 * mixing.CHOICES_PER_CALL + 17
  assert _elements(got, take) == _elements(want, take)


def test_prompt_mixtures_sample_with_it():
  import symbol_tuning.data.tasks  # pylint: disable=import-outside-toplevel,unused-import

  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  assert isinstance(mixture, pipeline.PromptMixture)
  assert mixture._sample_fn is mixing.sample_from_datasets  # pylint: disable=protected-access


def test_prompt_mixture_reads_its_tasks_with_seqios_arguments_in_any_form():
  import symbol_tuning.data.tasks  # pylint: disable=import-outside-toplevel,unused-import

  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  task = mixture.tasks[0]
  lengths = {"inputs": 512, "targets": 16}
  keys = {"inputs", "targets"}

  def first(ds):
    assert set(ds.element_spec) == keys  # only the kept features are built
    return [ex["inputs"].tolist() for ex in ds.take(3).as_numpy_iterator()]

  with seqio.utils.map_seed_manager(0):
    positional = first(mixture.get_task_dataset(task, keys, lengths, "train", False, True, 5))
  with seqio.utils.map_seed_manager(0):
    named = first(mixture.get_task_dataset(task, keys, sequence_length=lengths, seed=5))
  assert positional == named
  with pytest.raises(TypeError):
    mixture.get_task_dataset(task, keys, no_such_argument=1)


def test_prompt_mixture_reads_its_tasks_without_seqios_final_prefetch():
  import symbol_tuning.data.tasks  # pylint: disable=import-outside-toplevel,unused-import

  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  task = mixture.tasks[0]
  lengths = {"inputs": 512, "targets": 16}
  # seqio ends a task's dataset with prefetch(AUTOTUNE) (if this fails, seqio changed and
  # the mixture reads its tasks with that prefetch again: slower, nothing else) ...
  alone = task.get_dataset(lengths, "train", seed=5)
  assert type(alone).__name__ == "_PrefetchDataset"
  # ... which a PromptMixture leaves out: one thread and a hand-off per example less.
  ds = mixture.get_task_dataset(task, {"inputs", "targets"}, lengths, seed=5)
  assert type(ds).__name__ != "_PrefetchDataset"
  # Anything else is returned as it is.
  plain = tf.data.Dataset.range(3)
  assert pipeline._without_final_prefetch(plain) is plain  # pylint: disable=protected-access
  assert pipeline._without_final_prefetch(plain.prefetch(2)) is plain  # pylint: disable=protected-access


def test_docstring_example():
  a = tf.data.Dataset.range(100).map(lambda i: tf.strings.join(["A", tf.strings.as_string(i)]))
  b = tf.data.Dataset.range(100).map(lambda i: tf.strings.join(["B", tf.strings.as_string(i)]))
  got = mixing.sample_from_datasets([a, b], [0.75, 0.25], 3).take(10).as_numpy_iterator()
  assert [x.decode() for x in got] == "A0 A1 A2 A3 A4 A5 A6 B0 A7 A8".split()
