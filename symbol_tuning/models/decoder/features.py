"""Decoder-only features: seqio's PrefixLMFeatureConverter with best-fit packing.

A decoder-only model reads one sequence per example, prompt then answer:
`targets' = inputs + targets`. seqio's PrefixLMFeatureConverter builds the model
features from it (t5x's DecoderOnlyModel reads them):

  decoder_target_tokens     the concatenated sequence
  decoder_input_tokens      the same, shifted right within each segment (bos_id first)
  decoder_loss_weights      1 on the answer tokens only (loss_on_targets_only)
  decoder_causal_attention  1 on the prompt and the first answer position (prefix LM;
                            a causal LM ignores it)
  decoder_segment_ids / decoder_positions   when packed

Here the packing is best-fit decreasing over a buffer of examples (as
T5's converter does for the encoder-decoder rows: the same core,
`symbol_tuning.data.packing`), one sequence per
example, so rows of symbol-tuning prompts are nearly full. Unpacked, the output
is exactly seqio's.

One deliberate difference: seqio marks padding by token id 0, so an answer or
prompt token with id 0 (a real token in some HF vocabularies, e.g. Qwen's "!")
would get a wrong loss weight. Here the weights come from the example's extent
instead; for vocabularies where 0 is padding both agree.

  models.DecoderOnlyModel.feature_converter_cls = @features.BestFitPrefixLMFeatureConverter

Lengths: {"inputs": I, "targets": T} gives rows of I + T, as seqio's; the single length
{"targets": L} gives rows of L, the model's length, and the tasks then fit each prompt so
that prompt + EOS + answer + EOS <= L (`pipeline.build_prompts`), so nothing is cut.
"""
import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning.data import packing

# Per-token features of the concatenated sequence that PrefixLMFeatureConverter packs.
SEQUENCE_FEATURES = ("targets", "inputs_width", "inputs_width_add_pos")
# The model features of a training batch: prompt + answer in one sequence (seqio PrefixLM).
MODEL_FEATURES = ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                  "decoder_segment_ids", "decoder_positions", "decoder_causal_attention")


class _WholeSequence(dict):
  """{"inputs": L, "targets": L} for seqio's checks, read back as one length L."""

  def __init__(self, length: int):
    super().__init__(inputs=length, targets=length)
    self.length = length


def pack_sequences(features, lengths):
  """Best-fit packs a padded buffer of single sequences into rows.

  `features` are n arrays [n, L] sharing the per-example `lengths`. Returns
  (packed features, segment ids, positions), each [rows, L] int32.

  Example (L = 6): targets [[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0]],
  lengths [3, 2, 1]
    -> rows [[0, 1, 2]]: targets [[5, 6, 7, 8, 9, 4]], segment ids [[1, 1, 1, 2, 2, 3]],
       positions [[0, 1, 2, 0, 1, 0]]
  """
  width = features[0].shape[1]
  lengths = np.asarray(lengths, np.int64)
  rows = packing.best_fit_rows(lengths, np.zeros_like(lengths), width, 0)
  starts, counts = (np.arange(len(lengths)) * width).tolist(), lengths.tolist()
  packed = [packing.fill_rows(rows, f.reshape(-1), starts, counts, width) for f in features]
  return (*(p[0] for p in packed), packed[0][1], packed[0][2])


def best_fit_pack_sequences(ds: tf.data.Dataset, length: int,
                            buffer_size: int = 256) -> tf.data.Dataset:
  """Trims the SEQUENCE_FEATURES to `length` and best-fit packs each buffer of
  `buffer_size` examples; adds targets_segment_ids / targets_positions as seqio's
  packing does. Other features are dropped, as in seqio's packing."""

  def trim(ex):
    out = {k: tf.cast(ex[k][:length], tf.int32) for k in SEQUENCE_FEATURES}
    out["length"] = tf.size(out["targets"])
    return out

  def pack(batch):
    arrays = tf.numpy_function(
        lambda *a: pack_sequences(a[:-1], a[-1]),
        [batch[k] for k in SEQUENCE_FEATURES] + [batch["length"]],
        [tf.int32] * (len(SEQUENCE_FEATURES) + 2), stateful=False)
    names = SEQUENCE_FEATURES + ("targets_segment_ids", "targets_positions")
    packed = {}
    for name, array in zip(names, arrays):
      array.set_shape([None, length])
      packed[name] = array
    return tf.data.Dataset.from_tensor_slices(packed)

  ds = ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.padded_batch(buffer_size, padded_shapes={
      **{k: [length] for k in SEQUENCE_FEATURES}, "length": []})
  return packing.with_pipeline_options(ds.flat_map(pack))


class BestFitPrefixLMFeatureConverter(seqio.PrefixLMFeatureConverter):
  """seqio's PrefixLMFeatureConverter with best-fit packing and extent-based loss weights.

  With pack=False it pads as its parent does. `use_custom_packing_ops` is accepted
  for t5x's call and has no effect here.
  """

  def __init__(self, pack: bool = True, buffer_size: int = 256, **kwargs):
    super().__init__(pack=pack, **kwargs)
    self._buffer_size = buffer_size

  def __call__(self, ds, task_feature_lengths):
    length = packing.single_length(task_feature_lengths)
    if length is None:
      return super().__call__(ds, task_feature_lengths)
    # seqio checks that the lengths name exactly "inputs" and "targets" (each <= L here,
    # as the tasks fitted them); the row length read back below is L, not their sum.
    return super().__call__(ds, _WholeSequence(int(length)))

  def _concat_task_feature_lengths(self, task_feature_lengths):
    if isinstance(task_feature_lengths, _WholeSequence):
      return {k: task_feature_lengths.length for k in SEQUENCE_FEATURES}
    return super()._concat_task_feature_lengths(task_feature_lengths)

  def get_model_feature_lengths(self, task_feature_lengths):
    length = (task_feature_lengths.length if isinstance(task_feature_lengths, _WholeSequence)
              else packing.single_length(task_feature_lengths))
    if length is None:
      return super().get_model_feature_lengths(task_feature_lengths)
    return super().get_model_feature_lengths({"targets": length})

  def _pack_or_pad(self, ds, packed_lengths):
    if not self.pack:
      return super()._pack_or_pad(ds, packed_lengths)
    extra = sorted(set(packed_lengths) - set(SEQUENCE_FEATURES))
    if extra:
      raise ValueError(f"best-fit decoder-only packing handles {SEQUENCE_FEATURES}, not {extra}")
    return best_fit_pack_sequences(ds, int(packed_lengths["targets"]), self._buffer_size)

  def _convert_example(self, features):
    d = dict(super()._convert_example(features))
    if self.loss_on_targets_only:
      positions = (features["targets_positions"] if self.pack
                   else tf.range(tf.size(features["targets"])))
      # inputs_width_add_pos is >= 1 on every real position and 0 on padding.
      in_example = features["inputs_width_add_pos"] > 0
      answer = positions >= features["inputs_width"]
      d["decoder_loss_weights"] = tf.cast(in_example & answer, features["targets"].dtype)
    return d


CONVERTER = BestFitPrefixLMFeatureConverter  # the family's converter (ModelFamily.feature_converter)
SEQIO_CONVERTER = seqio.PrefixLMFeatureConverter  # the seqio one it extends (greedy packing)
