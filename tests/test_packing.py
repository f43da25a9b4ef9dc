"""Best-fit packing, for every model family's converter: every example lands in exactly one
row, intact, in seqio's packed format (EncDec for T5, PrefixLM for decoder-only), and rows
are much fuller than with seqio's greedy packing."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from symbol_tuning.data import packing
from symbol_tuning.models import registry
from symbol_tuning.models.decoder import features as decoder_features
from symbol_tuning.models.t5 import features as t5_features

FAMILIES = sorted(registry.FAMILIES)


def examples_ds(examples):
  return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={
          "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)})


def random_examples(n, seed, max_inputs, max_targets):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    li, lt = int(rng.integers(1, max_inputs + 1)), int(rng.integers(1, max_targets + 1))
    out.append({"inputs": rng.integers(2, 500, li).astype(np.int32),
                "targets": rng.integers(2, 500, lt).astype(np.int32)})
  return out


def test_docstring_example():
  assert packing.best_fit_rows([6, 3, 5, 2, 4], [1] * 5, 10, 4) == [[0, 4], [1, 2, 3]]


def test_fill_rows_docstring_example():
  packed, segments, positions = packing.fill_rows([[0, 1]], [7, 8, 9], [0, 2], [2, 1], 4)
  assert packed.tolist() == [[7, 8, 9, 0]] and segments.tolist() == [[1, 1, 2, 0]]
  assert positions.tolist() == [[0, 1, 0, 0]]


def test_targets_limit_rows_too():
  # Inputs would all fit one row, targets do not.
  assert packing.best_fit_rows([1, 1, 1], [3, 3, 2], 10, 5) == [[0, 2], [1]]


def _best_fit_by_scanning(input_lengths, target_lengths, max_inputs, max_targets):
  """Best-fit decreasing written plainly: each example, longest first (ties in stream
  order), scans every open row for the least input room left that holds it."""
  rows, room, room_targets = [], [], []
  for i in sorted(range(len(input_lengths)), key=lambda i: (-input_lengths[i], i)):
    fits = [r for r in range(len(rows))
            if room[r] >= input_lengths[i] and room_targets[r] >= target_lengths[i]]
    if fits:
      r = min(fits, key=lambda r: (room[r], r))
    else:
      r = len(rows)
      rows.append([])
      room.append(max_inputs)
      room_targets.append(max_targets)
    rows[r].append(i)
    room[r] -= input_lengths[i]
    room_targets[r] -= target_lengths[i]
  return sorted(sorted(r) for r in rows)


@pytest.mark.parametrize("seed", range(40))
def test_rows_are_best_fit_decreasing(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(0, 300))
  max_inputs, max_targets = [(10, 4), (64, 8), (2048, 512)][seed % 3]
  inputs = rng.integers(1, max_inputs + 1, n)
  if seed % 4 == 0:
    inputs = rng.choice([1, 2, 3, max_inputs], n)  # many ties
  targets = rng.integers(1, max_targets + 1, n)  # targets often decide the row
  got = packing.best_fit_rows(inputs, targets, max_inputs, max_targets)
  assert got == sorted(got, key=lambda r: r[0])  # rows in the order of their first example
  assert sorted(got) == _best_fit_by_scanning(inputs.tolist(), targets.tolist(), max_inputs,
                                              max_targets)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_features_as_seqio_when_the_rows_agree(family):
  # seqio's own docstring example: both packers put the two examples in one row.
  examples = [{"inputs": np.array([7, 8, 5, 1], np.int32), "targets": np.array([3, 9, 1], np.int32)},
              {"inputs": np.array([8, 4, 9, 3, 1], np.int32), "targets": np.array([4, 1], np.int32)}]
  lengths = {"inputs": 10, "targets": 7}
  fam = registry.get_family(family)
  ours = list(fam.feature_converter(pack=True)(examples_ds(examples), lengths).as_numpy_iterator())
  theirs = list(fam.feature_converter(pack=True, best_fit=False)(
      examples_ds(examples), lengths).as_numpy_iterator())
  assert len(ours) == len(theirs) == 1
  assert sorted(ours[0]) == sorted(theirs[0])
  for key in theirs[0]:
    np.testing.assert_array_equal(ours[0][key], theirs[0][key], err_msg=key)


def test_t5_converts_whole_buffers_exactly_as_seqio_converts_each_row():
  # The converter packs and converts a buffer in one numpy call (model_rows); seqio's
  # EncDecFeatureConverter converts each packed row with a tf.data function. Same rows.
  examples = random_examples(120, 11, 12, 3)
  lengths = {"inputs": 32, "targets": 10}
  ours = list(t5_features.BestFitEncDecFeatureConverter(pack=True, buffer_size=16)(
      examples_ds(examples), lengths).as_numpy_iterator())
  seqio_converter = seqio.EncDecFeatureConverter(pack=True)
  theirs = list(packing.best_fit_pack_dataset(examples_ds(examples), lengths, 16)
                .map(seqio_converter._convert_example)  # pylint: disable=protected-access
                .as_numpy_iterator())
  assert len(ours) == len(theirs) > 20
  assert max(row["decoder_segment_ids"].max() for row in theirs) >= 3  # rows of many segments
  for a, b in zip(ours, theirs):
    assert list(a) == list(t5_features.MODEL_FEATURES) and sorted(a) == sorted(b)
    for key in b:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_model_rows_docstring_example():
  packed = {"targets": np.array([[5, 1, 7, 1, 0]], np.int32),
            "targets_segment_ids": np.array([[1, 1, 2, 2, 0]], np.int32)}
  packed.update({k: np.zeros((1, 5), np.int32) for k in packing.PACKED if k not in packed})
  out = t5_features.model_rows(packed)
  assert out["decoder_input_tokens"].tolist() == [[0, 5, 0, 7, 0]]
  assert out["decoder_loss_weights"].tolist() == [[1, 1, 1, 1, 0]]


@pytest.mark.parametrize("family", FAMILIES)
def test_unpacked_is_seqio_padding(family):
  examples = random_examples(5, 0, 12, 4)
  lengths = {"inputs": 12, "targets": 4}
  fam = registry.get_family(family)
  ours = list(fam.feature_converter(pack=False)(examples_ds(examples), lengths)
              .as_numpy_iterator())
  theirs = list(fam.feature_converter(pack=False, best_fit=False)(
      examples_ds(examples), lengths).as_numpy_iterator())
  for a, b in zip(ours, theirs, strict=True):
    assert sorted(a) == sorted(b)
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("buffer_size", [1, 7, 64])
def test_every_example_packed_once_and_intact(buffer_size):
  max_inputs, max_targets = 64, 8
  examples = random_examples(150, buffer_size, max_inputs, max_targets)
  examples.append({"inputs": np.arange(2, 2 + max_inputs, dtype=np.int32),  # a full row
                   "targets": np.arange(2, 2 + max_targets, dtype=np.int32)})
  lengths = {"inputs": max_inputs, "targets": max_targets}
  rows = list(t5_features.BestFitEncDecFeatureConverter(pack=True, buffer_size=buffer_size)(
      examples_ds(examples), lengths).as_numpy_iterator())
  found = []
  for row in rows:
    segments = row["encoder_segment_ids"]
    assert set(np.unique(segments)) - {0} == set(np.unique(row["decoder_segment_ids"])) - {0}
    for s in range(1, segments.max() + 1):
      inputs = row["encoder_input_tokens"][segments == s]
      at = row["decoder_segment_ids"] == s
      targets = row["decoder_target_tokens"][at]
      np.testing.assert_array_equal(row["encoder_positions"][segments == s], np.arange(len(inputs)))
      np.testing.assert_array_equal(row["decoder_positions"][at], np.arange(len(targets)))
      # Decoder inputs: the targets shifted right within the segment, starting at 0.
      np.testing.assert_array_equal(row["decoder_input_tokens"][at], np.r_[0, targets[:-1]])
      np.testing.assert_array_equal(row["decoder_loss_weights"][at], 1)
      found.append((tuple(inputs), tuple(targets)))
    assert (row["decoder_loss_weights"][row["decoder_segment_ids"] == 0] == 0).all()
  expected = [(tuple(e["inputs"]), tuple(e["targets"])) for e in examples]
  assert sorted(found) == sorted(expected)
  if buffer_size == 1:
    assert len(rows) == len(examples)


def test_deterministic_and_keeps_stream_order_within_rows():
  examples = random_examples(100, 3, 64, 8)
  lengths = {"inputs": 64, "targets": 8}

  def first_tokens():
    rows = t5_features.BestFitEncDecFeatureConverter(buffer_size=32)(examples_ds(examples), lengths)
    return [tuple(r["encoder_input_tokens"][r["encoder_positions"] == 0])
            for r in rows.as_numpy_iterator()]

  runs = first_tokens(), first_tokens()
  assert runs[0] == runs[1]
  rows = packing.best_fit_rows([len(e["inputs"]) for e in examples],
                               [len(e["targets"]) for e in examples], 64, 8)
  assert all(r == sorted(r) for r in rows)
  assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_fuller_than_greedy_on_prompt_like_lengths():
  # Prompt lengths spread over the whole budget, as symbol-tuning prompts are.
  examples = random_examples(512, 1, 2048, 8)
  lengths = {"inputs": 2048, "targets": 512}

  def fill(converter):
    rows = list(converter(examples_ds(examples), lengths).as_numpy_iterator())
    return sum(int((r["encoder_segment_ids"] > 0).sum()) for r in rows) / (2048 * len(rows))

  best_fit = fill(t5_features.BestFitEncDecFeatureConverter(buffer_size=256))
  greedy = fill(seqio.EncDecFeatureConverter(pack=True))
  assert best_fit > 0.9 > greedy


def test_rejects_extra_features():
  with pytest.raises(ValueError, match="inputs and targets only"):
    packing.best_fit_pack_dataset(examples_ds([]), {"inputs": 8, "targets": 4, "weights": 4})


def test_rejects_examples_without_token_id_vectors():
  only_inputs = tf.data.Dataset.from_tensors({"inputs": tf.constant([1, 2], tf.int32)})
  with pytest.raises(ValueError, match="no 'targets' feature"):
    packing.best_fit_pack_dataset(only_inputs, {"inputs": 8, "targets": 4})
  floats = tf.data.Dataset.from_tensors({"inputs": tf.constant([1.0]),
                                         "targets": tf.constant([1], tf.int32)})
  with pytest.raises(ValueError, match="vectors of token ids for 'inputs'"):
    packing.best_fit_pack_dataset(floats, {"inputs": 8, "targets": 4})


def test_input_lengths_are_checked_in_the_packing_call_as_seqio_checks_them():
  too_long = [{"inputs": np.arange(1, 11, dtype=np.int32), "targets": np.array([1], np.int32)}]
  with pytest.raises(tf.errors.InvalidArgumentError, match="'inputs' has 10 tokens, more than "
                                                          "its length 8"):
    list(t5_features.BestFitEncDecFeatureConverter(pack=True)(
        examples_ds(too_long), {"inputs": 8, "targets": 4}))
  # seqio's own rule: without the check, packing trims.
  rows = list(t5_features.BestFitEncDecFeatureConverter(pack=True, apply_length_check=False)(
      examples_ds(too_long), {"inputs": 8, "targets": 4}).as_numpy_iterator())
  assert rows[0]["encoder_input_tokens"].tolist() == list(range(1, 9))


# Decoder-only specifics: one sequence per example, answer-only loss weights.
def _ex(inputs, targets):
  return {"inputs": np.array(inputs, np.int32), "targets": np.array(targets, np.int32)}


def _rows(converter, examples, lengths):
  return [{k: v.tolist() for k, v in row.items()}
          for row in converter(examples_ds(examples), lengths).as_numpy_iterator()]


def test_decoder_packed_row_matches_seqio_docstring_example():
  # seqio's PrefixLMFeatureConverter docstring, example 1: both examples share one row.
  examples = [_ex([7, 8, 5, 1], [3, 9, 1]), _ex([8, 4, 9, 3, 1], [4, 1])]
  lengths = {"inputs": 7, "targets": 8}
  ours = _rows(decoder_features.BestFitPrefixLMFeatureConverter(pack=True), examples, lengths)
  assert ours == [{
      "decoder_target_tokens": [7, 8, 5, 1, 3, 9, 1, 8, 4, 9, 3, 1, 4, 1, 0],
      "decoder_input_tokens": [0, 7, 8, 5, 1, 3, 9, 0, 8, 4, 9, 3, 1, 4, 0],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0],
      "decoder_positions": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0],
      "decoder_segment_ids": [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
  }]
  assert ours == _rows(seqio.PrefixLMFeatureConverter(pack=True), examples, lengths)


def test_decoder_unpacked_weights_the_answer_only():
  examples = [_ex([9, 4, 6, 1], [3, 9, 1]), _ex([5], [2, 2, 1])]
  lengths = {"inputs": 10, "targets": 4}
  ours = _rows(decoder_features.BestFitPrefixLMFeatureConverter(pack=False), examples, lengths)
  assert ours == _rows(seqio.PrefixLMFeatureConverter(pack=False), examples, lengths)
  assert ours[0]["decoder_loss_weights"] == [0, 0, 0, 0, 1, 1, 1] + [0] * 7


def test_decoder_token_id_zero_keeps_its_loss_weight():
  """Id 0 is a real token in e.g. Qwen's vocabulary: the answer's 0 is trained on and the
  prompt's 0 is not (seqio, reading 0 as padding, does the opposite)."""
  examples = [_ex([5, 0, 6], [7, 8]), _ex([4], [0, 3])]
  lengths = {"inputs": 5, "targets": 3}  # rows of 8: both examples fit one packed row
  expected = [[0, 0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
  unpacked = _rows(decoder_features.BestFitPrefixLMFeatureConverter(pack=False), examples, lengths)
  assert [r["decoder_loss_weights"] for r in unpacked] == expected
  seqio_rows = _rows(seqio.PrefixLMFeatureConverter(pack=False), examples, lengths)
  assert [r["decoder_loss_weights"] for r in seqio_rows] != expected
  packed = _rows(decoder_features.BestFitPrefixLMFeatureConverter(pack=True), examples, lengths)
  assert [r["decoder_loss_weights"] for r in packed] == [[0, 0, 0, 1, 1, 0, 1, 1]]


def test_decoder_every_example_lands_intact_once_and_rows_are_fuller_than_seqio():
  rng = np.random.default_rng(0)
  examples = [_ex(rng.integers(2, 500, int(rng.integers(1, 60))),
                  rng.integers(2, 500, int(rng.integers(1, 8)))) for _ in range(200)]
  lengths = {"inputs": 60, "targets": 8}
  rows = _rows(decoder_features.BestFitPrefixLMFeatureConverter(pack=True, buffer_size=100),
               examples, lengths)
  found = []
  for row in rows:
    segments = np.array(row["decoder_segment_ids"])
    tokens, weights = np.array(row["decoder_target_tokens"]), np.array(row["decoder_loss_weights"])
    for s in range(1, segments.max() + 1):
      seq, w = tokens[segments == s], weights[segments == s]
      cut = int(np.argmax(w))  # the answer starts at the first weighted token
      assert w[cut:].all() and not w[:cut].any()
      found.append((tuple(seq[:cut]), tuple(seq[cut:])))
  expected = [(tuple(e["inputs"]), tuple(e["targets"])) for e in examples]
  assert sorted(found) == sorted(expected)
  greedy = _rows(seqio.PrefixLMFeatureConverter(pack=True), examples, lengths)
  fill = lambda rs: np.mean([np.mean(np.array(r["decoder_segment_ids"]) > 0) for r in rs])
  assert len(rows) < len(greedy) and fill(rows) > fill(greedy)


def test_decoder_single_length_is_the_row_length():
  """Decoder-only lengths {'targets': L}: rows of L (the tasks fit prompt + answer to L),
  the same rows as seqio's {'inputs': I, 'targets': L - I}."""
  examples = [_ex([7, 8, 5, 1], [3, 9, 1]), _ex([8, 4, 9, 3, 1], [4, 1])]
  for pack in (True, False):
    converter = decoder_features.BestFitPrefixLMFeatureConverter(pack=pack)
    single = _rows(converter, examples, {"targets": 15})
    assert single == _rows(converter, examples, {"inputs": 7, "targets": 8})
    assert converter.get_model_feature_lengths({"targets": 15})["decoder_target_tokens"] == 15
  assert packing.single_length({"inputs": 7, "targets": 8}) is None
