"""Best-fit packing into fixed-length rows: the core every family's feature converter uses.

seqio's packing (EncDecFeatureConverter(pack=True)) fills one row at a time with the next
examples in stream order, and closes the row as soon as one does not fit. Symbol-tuning
prompts are fitted to the 2048-token budget, so their lengths spread from ~200 to ~2048
tokens; greedy packing then leaves the tail of most rows empty (75% of input tokens used
on symbol_tuning_bigbench, benchmarks/packing.py). Here a buffer of prompts is packed
best-fit decreasing instead: longest first, each into the open row it fills most tightly
(inputs and targets both have to fit). That uses ~97% of the input tokens.

The converters are the families' (`symbol_tuning/models/<family>/features.py`): T5's
gives exactly what seqio's EncDecFeatureConverter(pack=True) produces, the decoder
family's what PrefixLMFeatureConverter does, so the model and the loss see nothing new
and a t5x run can use them too. Here: `best_fit_rows` (which examples share a row),
`fill_rows` (the packed arrays), `pack_buffer` / `best_fit_pack_dataset` (inputs and
targets rows, a tf.data stage) and `single_length` (the one-sequence lengths convention).

Packing is a pure function of the buffer's contents: the same example stream gives the
same rows, so a resumed run (which replays the stream) sees the same batches.
"""
import bisect

import numpy as np
import tensorflow as tf

from symbol_tuning import tf_exit

FEATURES = ("inputs", "targets")
PACKED = ("inputs", "inputs_segment_ids", "inputs_positions",
          "targets", "targets_segment_ids", "targets_positions")


def best_fit_rows(input_lengths, target_lengths, max_inputs: int,
                  max_targets: int) -> list[list[int]]:
  """Groups examples into rows: best-fit decreasing on the input length.

  Each example goes to the open row with the least input room left that still holds its
  inputs and targets (the first opened on a tie), or opens a row. Each row's examples stay
  in stream order, and rows come out in the order of their first example, so the
  (shuffled, mixed) stream order is kept as far as packing allows. Lengths must already be
  trimmed to the maxima.

  Example: input lengths [6, 3, 5, 2, 4], targets all 1, max_inputs 10, max_targets 4
    -> longest first: 6 opens row A, 5 opens row B (does not fit A's 4 left), 4 fills A
       exactly, 3 goes to B (2 left), 2 fills B -> [[0, 4], [1, 2, 3]]
  """
  input_lengths = [int(n) for n in input_lengths]
  target_lengths = [int(n) for n in target_lengths]
  members: list[list[int]] = []
  free_targets: list[int] = []
  # (input room left, row) of every row, sorted: the best fit is found by bisection (a
  # scan over all rows per example cost more than the rest of packing).
  by_room: list[tuple[int, int]] = []
  # Longest first; ties in stream order.
  for i in sorted(range(len(input_lengths)), key=lambda i: -input_lengths[i]):
    need, need_targets = input_lengths[i], target_lengths[i]
    at = bisect.bisect_left(by_room, (need, -1))
    while at < len(by_room) and free_targets[by_room[at][1]] < need_targets:
      at += 1
    if at < len(by_room):
      room, row = by_room.pop(at)
    else:
      room, row = max_inputs, len(members)
      members.append([])
      free_targets.append(max_targets)
    members[row].append(i)
    free_targets[row] -= need_targets
    bisect.insort(by_room, (room - need, row))
  rows = [sorted(m) for m in members]
  rows.sort(key=lambda m: m[0])
  return rows


def pack_buffer(input_values, input_lengths, target_values, target_lengths,
                max_inputs: int, max_targets: int):
  """Trims a buffer of examples to the maxima and packs it into rows with seqio's packed
  features. Each feature comes flat: the examples' tokens concatenated, and their lengths.

  Example (max lengths 8 / 4): inputs [7, 8, 1] and [9, 1], targets [3, 1] and [4, 1]
    (input_values [7, 8, 1, 9, 1], input_lengths [3, 2], target_values [3, 1, 4, 1], ...)
    -> inputs              [[7, 8, 1, 9, 1, 0, 0, 0]]
       inputs_segment_ids  [[1, 1, 1, 2, 2, 0, 0, 0]]
       inputs_positions    [[0, 1, 2, 0, 1, 0, 0, 0]]
       targets             [[3, 1, 4, 1]], targets_segment_ids [[1, 1, 2, 2]],
       targets_positions   [[0, 1, 0, 1]]
  Returns the six arrays of PACKED, each [rows, L] int32.
  """
  features = {}
  for name, values, lengths, max_length in (
      ("inputs", input_values, input_lengths, max_inputs),
      ("targets", target_values, target_lengths, max_targets)):
    lengths = np.asarray(lengths, np.int64)
    features[name] = (np.asarray(values, np.int32), (np.cumsum(lengths) - lengths).tolist(),
                      np.minimum(lengths, max_length).tolist(), max_length)
  rows = best_fit_rows(features["inputs"][2], features["targets"][2], max_inputs, max_targets)
  out = {}
  for name, (values, starts, lengths, max_length) in features.items():
    out[name], out[f"{name}_segment_ids"], out[f"{name}_positions"] = fill_rows(
        rows, values, starts, lengths, max_length)
  return tuple(out[k] for k in PACKED)


def fill_rows(rows, values, starts, lengths, width: int):
  """(packed, segment ids, positions), each [len(rows), width] int32: row r holds the
  examples `rows[r]` one after another; example i is values[starts[i]:][:lengths[i]].

  Example: rows [[0, 1]], values [7, 8, 9], starts [0, 2], lengths [2, 1], width 4
    -> [[7, 8, 9, 0]], [[1, 1, 2, 0]], [[0, 1, 0, 0]]
  """
  packed, segments, positions = np.zeros((3, len(rows), width), np.int32)
  counting = np.arange(width, dtype=np.int32)
  for r, members in enumerate(rows):  # slice copies: cheaper than per-token indexing
    at = 0
    for segment, i in enumerate(members, start=1):
      start, length = starts[i], lengths[i]
      packed[r, at:at + length] = values[start:start + length]
      segments[r, at:at + length] = segment
      positions[r, at:at + length] = counting[:length]
      at += length
  return packed, segments, positions


def single_length(task_feature_lengths) -> int | None:
  """The model length L of one-sequence lengths given as {"targets": L}, else None (the
  tasks then fit prompt + EOS + answer + EOS to L; see the decoder family's features).

  single_length({"targets": 544}) -> 544;  single_length({"inputs": 512, "targets": 32}) -> None
  """
  if task_feature_lengths is None or "inputs" in task_feature_lengths:
    return None
  return task_feature_lengths.get("targets")


def best_fit_pack_dataset(ds: tf.data.Dataset, feature_lengths: dict,
                          buffer_size: int = 256, check_lengths: bool = False,
                          convert=None) -> tf.data.Dataset:
  """Best-fit packs each buffer of `buffer_size` examples into rows, "inputs"/"targets"
  trimmed to feature_lengths (a finite stream's last buffer may be short). With
  `check_lengths` an example longer than its length is an error instead (seqio's input
  length validation). `convert`, if given, is (fn, widths): fn maps a buffer's packed
  rows ({PACKED name: [rows, L] array}) to other features, each [rows, widths[name]]
  int32, in the same call (a family's model features: one numpy call per buffer instead
  of a tf.data function per row).

  Example: 256 prompts of 200..2048 input tokens at {"inputs": 2048, "targets": 512}
    -> ~130 rows of 2048 input tokens, each holding 1-8 prompts, ~97% of tokens used.
  Features other than inputs/targets are dropped, as in seqio's packing. Examples are
  batched ragged and checked, trimmed and packed in one numpy call; for our tasks'
  examples (already ragged) no tf.data function runs per example or per row. Buffers
  are packed in parallel (packing is a pure function of a buffer) and come out in order.
  """
  unknown = sorted(set(feature_lengths) - set(FEATURES))
  if unknown:
    raise ValueError(f"best-fit packing handles inputs and targets only, not {unknown}")
  lengths = {k: int(feature_lengths[k]) for k in FEATURES}
  convert_fn, widths = convert or (None, {k: lengths[k.split("_")[0]] for k in PACKED})
  tf_exit.register()  # Python runs inside tf.data from here: let the process exit cleanly

  def pack_flat(input_values, input_lengths, target_values, target_lengths):
    for name, example_lengths in (("inputs", input_lengths), ("targets", target_lengths)):
      if check_lengths and example_lengths.size and example_lengths.max() > lengths[name]:
        raise ValueError(
            f"best-fit packing: an example's {name!r} has {example_lengths.max()} tokens, more "
            f"than its length {lengths[name]} (input_validation; trim it first, or build "
            "the converter with apply_length_check=False to have packing trim it)")
    packed = pack_buffer(input_values, input_lengths, target_values, target_lengths,
                         lengths["inputs"], lengths["targets"])
    if convert_fn is None:
      return packed
    converted = convert_fn(dict(zip(PACKED, packed)))
    return tuple(np.asarray(converted[name], np.int32) for name in widths)

  @tf.autograph.experimental.do_not_convert  # no control flow: autograph would only slow it
  def pack(batch):
    arrays = tf.numpy_function(
        pack_flat,
        [batch["inputs"].flat_values, batch["inputs"].row_lengths(),
         batch["targets"].flat_values, batch["targets"].row_lengths()],
        [tf.int32] * len(widths), stateful=False)
    rows = {}
    for (name, width), array in zip(widths.items(), arrays):
      array.set_shape([None, width])
      rows[name] = array
    return rows

  spec = ds.element_spec
  for name in FEATURES:
    if name not in spec:
      raise ValueError(f"best-fit packing: the examples have no {name!r} feature (they have "
                       f"{sorted(spec)})")
    if not spec[name].dtype.is_integer or spec[name].shape.rank != 1:
      raise ValueError(f"best-fit packing needs vectors of token ids for {name!r}, got "
                       f"{spec[name]}")
  # Every feature is batched (a map to drop the others would run per example). Ragged
  # examples (our tasks' prompts) batch as they are; dense ones of varying length need
  # ragged_batch, which runs a function per example to make them ragged.
  if all(isinstance(s, tf.RaggedTensorSpec) or s.shape.is_fully_defined()
         for s in spec.values()):
    buffers = ds.batch(buffer_size)
  else:
    buffers = ds.ragged_batch(buffer_size)
  # A deterministic parallel map keeps the buffers' order; unbatch splits the rows in C++.
  rows = buffers.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return with_pipeline_options(rows.unbatch())


def with_pipeline_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Options for the whole input pipeline behind `ds` (tf.data applies a dataset's options
  to everything upstream): its ops run on one thread each instead of sharing the
  intra-op pool, and consecutive maps are fused. Neither changes an element; together they
  took the main process's CPU per prompt from 446 to 323 us with 2 prompt workers, and
  from 607 to 536 us building in-process, on 2 cores (benchmarks/prompts.py, one idle run
  before and one after)."""
  options = tf.data.Options()
  options.threading.max_intra_op_parallelism = 1
  options.experimental_optimization.map_fusion = True
  return ds.with_options(options)
