"""Decoder-only features: seqio PrefixLM conventions, best-fit packing, answer-only loss."""
import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning.data import packing
from symbol_tuning.models.decoder import features as decoder_packing


def _ds(examples):
  return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={
          "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)})


def _ex(inputs, targets):
  return {"inputs": np.array(inputs, np.int32), "targets": np.array(targets, np.int32)}


def _rows(converter, examples, lengths):
  return [{k: v.tolist() for k, v in row.items()}
          for row in converter(_ds(examples), lengths).as_numpy_iterator()]


def test_packed_row_matches_seqio_docstring_example():
  # seqio's PrefixLMFeatureConverter docstring, example 1: both examples share one row.
  examples = [_ex([7, 8, 5, 1], [3, 9, 1]), _ex([8, 4, 9, 3, 1], [4, 1])]
  lengths = {"inputs": 7, "targets": 8}
  ours = _rows(decoder_packing.BestFitPrefixLMFeatureConverter(pack=True), examples, lengths)
  assert ours == [{
      "decoder_target_tokens": [7, 8, 5, 1, 3, 9, 1, 8, 4, 9, 3, 1, 4, 1, 0],
      "decoder_input_tokens": [0, 7, 8, 5, 1, 3, 9, 0, 8, 4, 9, 3, 1, 4, 0],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0],
      "decoder_positions": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0],
      "decoder_segment_ids": [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
  }]
  assert ours == _rows(seqio.PrefixLMFeatureConverter(pack=True), examples, lengths)


def test_unpacked_is_exactly_seqio():
  examples = [_ex([9, 4, 6, 1], [3, 9, 1]), _ex([5], [2, 2, 1])]
  lengths = {"inputs": 10, "targets": 4}
  ours = _rows(decoder_packing.BestFitPrefixLMFeatureConverter(pack=False), examples, lengths)
  assert ours == _rows(seqio.PrefixLMFeatureConverter(pack=False), examples, lengths)
  assert ours[0]["decoder_loss_weights"] == [0, 0, 0, 0, 1, 1, 1] + [0] * 7


def test_token_id_zero_keeps_its_loss_weight():
  """Id 0 is a real token in e.g. Qwen's vocabulary: the answer's 0 is trained on and the
  prompt's 0 is not (seqio, reading 0 as padding, does the opposite)."""
  examples = [_ex([5, 0, 6], [7, 8]), _ex([4], [0, 3])]
  lengths = {"inputs": 5, "targets": 3}  # rows of 8: both examples fit one packed row
  expected = [[0, 0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
  unpacked = _rows(decoder_packing.BestFitPrefixLMFeatureConverter(pack=False), examples, lengths)
  assert [r["decoder_loss_weights"] for r in unpacked] == expected
  seqio_rows = _rows(seqio.PrefixLMFeatureConverter(pack=False), examples, lengths)
  assert [r["decoder_loss_weights"] for r in seqio_rows] != expected
  packed = _rows(decoder_packing.BestFitPrefixLMFeatureConverter(pack=True), examples, lengths)
  assert [r["decoder_loss_weights"] for r in packed] == [[0, 0, 0, 1, 1, 0, 1, 1]]


def test_every_example_lands_intact_once_and_rows_are_fuller_than_seqio():
  rng = np.random.default_rng(0)
  examples = [_ex(rng.integers(2, 500, int(rng.integers(1, 60))),
                  rng.integers(2, 500, int(rng.integers(1, 8)))) for _ in range(200)]
  lengths = {"inputs": 60, "targets": 8}
  rows = _rows(decoder_packing.BestFitPrefixLMFeatureConverter(pack=True, buffer_size=100),
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


def test_single_length_is_the_row_length():
  """Decoder-only lengths {'targets': L}: rows of L (the tasks fit prompt + answer to L),
  the same rows as seqio's {'inputs': I, 'targets': L - I}."""
  examples = [_ex([7, 8, 5, 1], [3, 9, 1]), _ex([8, 4, 9, 3, 1], [4, 1])]
  for pack in (True, False):
    converter = decoder_packing.BestFitPrefixLMFeatureConverter(pack=pack)
    single = _rows(converter, examples, {"targets": 15})
    assert single == _rows(converter, examples, {"inputs": 7, "targets": 8})
    assert converter.get_model_feature_lengths({"targets": 15})["decoder_target_tokens"] == 15
  assert packing.single_length({"inputs": 7, "targets": 8}) is None
