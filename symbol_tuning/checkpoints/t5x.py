"""t5x checkpoints: the msgpack + TensorStore layout of the public Flan-T5 checkpoints (read
and written), and the Orbax layout that t5x.train writes by default (`use_orbax=True`; read).

A t5x model dir holds `checkpoint_<step>/` directories. An Orbax one holds `state/` (an Orbax
PyTree of {'target': <params>, 'state': {'step', 'param_states'}}), `dataset/` and
`_CHECKPOINT_METADATA`. A msgpack one holds
  checkpoint   msgpack (flax.serialization) of
               {'version': 3, 'optimizer': {'target': <params>, 'state': {'step': ...}, ...}}
               where every array written to TensorStore appears as its spec dict
               {'driver': 'zarr', 'dtype': ..., 'kvstore': {'driver': 'file'|'gcs',
                'path': 'target.encoder.layers_0.attention.query.kernel', ...},
                'metadata': {'shape': ..., 'chunks': ..., 'compressor': ...}}
               (path relative to the checkpoint dir: the param path joined by '.'),
               and small unpartitioned arrays may be stored inline.
  target.<param path joined by '.'>/   one zarr array per parameter.
Checkpoints written to GCS name a gcs kvstore (dummy bucket); we read the same
relative path from the checkpoint's own folder, local or gs:// (the public Flan-T5 ones are
read where they are). bfloat16 arrays are read as float32.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import numpy as np
from etils import epath

from symbol_tuning import paths
from symbol_tuning.checkpoints import CheckpointError, check_params, flatten, unflatten
from symbol_tuning.models.t5.config import T5Config

VERSION = 3
MSGPACK_FILE = "checkpoint"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
_CHUNK_BYTES = 64 * 1024 * 1024  # t5x aims at 64 MiB zarr chunks


ORBAX_ITEM = "state"  # t5x's Orbax checkpoints keep the train state in this item dir


def checkpoint_layout(ckpt_dir: str) -> Optional[str]:
  """'msgpack', 'orbax' or None (not a complete t5x checkpoint_<step> dir)."""
  if epath.Path(ckpt_dir, MSGPACK_FILE).is_file():
    return "msgpack"
  if epath.Path(ckpt_dir, ORBAX_ITEM, "_METADATA").is_file():
    return "orbax"
  return None


def all_steps(model_dir: str) -> list[int]:
  """Steps of the t5x `checkpoint_<step>` dirs (either layout) under `model_dir`, ascending."""
  steps = []
  if epath.Path(model_dir).is_dir():
    for entry in (child.name for child in epath.Path(model_dir).iterdir()):
      m = _STEP_DIR.match(entry)
      if m and checkpoint_layout(os.path.join(model_dir, entry)):
        steps.append(int(m.group(1)))
  return sorted(steps)


def is_t5x(path: str) -> bool:
  path = os.fspath(path)
  if epath.Path(path).is_file():
    return os.path.basename(path) == MSGPACK_FILE
  return bool(checkpoint_layout(path)) or bool(all_steps(path))


def find_checkpoint_dir(path: str, step: Optional[int] = None) -> str:
  """The `checkpoint_<step>` dir for `path` (a step dir, its msgpack file, or a
  model dir, where the latest step is used unless `step` is given)."""
  path = os.fspath(path)
  if epath.Path(path).is_file() and os.path.basename(path) == MSGPACK_FILE:
    return os.fspath(paths.path(path).parent)
  if not epath.Path(path).is_dir():
    raise CheckpointError(f"{path}: no such t5x checkpoint directory")
  if step is not None:
    candidate = os.path.join(path, f"checkpoint_{step}")
    if checkpoint_layout(candidate):
      return candidate
    m = _STEP_DIR.match(os.path.basename(os.path.normpath(path)))
    if m and int(m.group(1)) == step and checkpoint_layout(path):
      return path
    raise CheckpointError(f"{path}: no t5x checkpoint_{step} "
                          f"(steps found: {all_steps(path) or 'none'})")
  if checkpoint_layout(path):
    return path
  steps = all_steps(path)
  if not steps:
    raise CheckpointError(
        f"{path}: not a t5x checkpoint (no '{MSGPACK_FILE}' file or Orbax "
        f"'{ORBAX_ITEM}/' dir, and no checkpoint_<step> below it)")
  return os.path.join(path, f"checkpoint_{steps[-1]}")


def checkpoint_step(ckpt_dir: str) -> Optional[int]:
  m = _STEP_DIR.match(os.path.basename(os.path.normpath(ckpt_dir)))
  return int(m.group(1)) if m else None


# -----------------------------------------------------------------------------
# Reading.
# -----------------------------------------------------------------------------
def _is_spec(node: Any) -> bool:
  return isinstance(node, Mapping) and "driver" in node and (
      "kvstore" in node or "path" in node)


def _flatten_target(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping) and not _is_spec(value):
      out.update(_flatten_target(value, name))
    else:
      out[name] = value
  return out


def _spec_path(spec: Mapping[str, Any]) -> str:
  kvstore = spec.get("kvstore")
  if isinstance(kvstore, Mapping) and "path" in kvstore:
    return str(kvstore["path"])
  if isinstance(kvstore, str):  # URL form, e.g. "file:///x/target.a.b/"
    return kvstore.split("://", 1)[-1]
  if "path" in spec:  # tensorstore < 0.1.14 specs
    return str(spec["path"])
  raise CheckpointError(f"tensorstore spec without a path: {dict(spec)}")


def _read_array(ckpt_dir: str, name: str, spec: Mapping[str, Any]) -> np.ndarray:
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  rel = _spec_path(spec).rstrip("/")
  local = rel if os.path.isabs(rel) and os.path.isdir(rel) else os.path.join(
      ckpt_dir, os.path.basename(rel))
  if not epath.Path(local).is_dir():
    raise CheckpointError(f"{ckpt_dir}: array directory '{os.path.basename(rel)}' for "
                          f"parameter '{name}' is missing")
  driver = spec.get("driver", "zarr")
  try:
    store = ts.open({"driver": driver, "kvstore": paths.kvstore(local)},
                    open=True, read=True).result()
    arr = store.read().result()
  except Exception as e:  # tensorstore raises ValueError / its own types
    raise CheckpointError(f"{local}: cannot read parameter '{name}' ({e})") from e
  shape = (spec.get("metadata") or {}).get("shape")
  if shape is not None and tuple(int(s) for s in shape) != tuple(arr.shape):
    raise CheckpointError(f"{local}: parameter '{name}' has shape {tuple(arr.shape)} on "
                          f"disk but {tuple(shape)} in the msgpack spec")
  if arr.dtype == np.uint16:
    raise CheckpointError(f"{local}: parameter '{name}' is stored as uint16 (t5x "
                          f"checkpoint version < 3); re-save it with bfloat16")
  return np.asarray(arr, dtype=np.float32)


def read_target(ckpt_dir: str) -> dict[str, np.ndarray]:
  """The flat {'encoder/layers_0/...': float32 array} of a checkpoint_<step> dir."""
  if checkpoint_layout(ckpt_dir) == "orbax":
    return _read_orbax_target(ckpt_dir)
  return _read_msgpack_target(ckpt_dir)


def _read_orbax_target(ckpt_dir: str) -> dict[str, np.ndarray]:
  """The params of an Orbax t5x checkpoint, read as host numpy arrays on any mesh; the
  optimizer state is not read (partial restore of the 'target' subtree)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  item_dir = os.fspath(paths.path(ckpt_dir) / ORBAX_ITEM)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    tree = checkpointer.metadata(item_dir).item_metadata.tree
    if not isinstance(tree, Mapping) or not isinstance(tree.get("target"), Mapping):
      raise CheckpointError(f"{item_dir}: an Orbax checkpoint without a 'target' params tree")
    item = {"target": tree["target"]}
    restore_args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    restored = checkpointer.restore(item_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  except CheckpointError:
    raise
  except Exception as e:  # orbax / tensorstore raise many types
    raise CheckpointError(f"{item_dir}: cannot read the Orbax checkpoint ({e})") from e
  return {name: np.asarray(value, dtype=np.float32)
          for name, value in flatten(restored["target"]).items()}


def _read_msgpack_target(ckpt_dir: str) -> dict[str, np.ndarray]:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  msgpack_path = os.path.join(ckpt_dir, MSGPACK_FILE)
  raw = epath.Path(msgpack_path).read_bytes()
  if raw.startswith(b"model_checkpoint_path"):
    raise CheckpointError(f"{msgpack_path}: a TensorFlow checkpoint index, not a t5x "
                          f"checkpoint")
  try:
    contents = serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several types
    raise CheckpointError(f"{msgpack_path}: not a msgpack t5x checkpoint ({e})") from e
  if not isinstance(contents, Mapping):
    raise CheckpointError(f"{msgpack_path}: unexpected contents")
  version = contents.get("version", 0)
  state = contents.get("optimizer") if version else contents
  if not isinstance(state, Mapping) or not isinstance(state.get("target"), Mapping):
    raise CheckpointError(f"{msgpack_path}: no 'optimizer/target' params tree "
                          f"(version {version})")
  flat = {}
  for name, leaf in _flatten_target(state["target"]).items():
    if _is_spec(leaf):
      flat[name] = _read_array(ckpt_dir, name, leaf)
    elif leaf is None:
      continue
    else:
      flat[name] = np.asarray(leaf, dtype=np.float32)
  return flat


def _fix_kernel_ranks(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Older t5x stored attention kernels 3-D ((embed, heads, kv) / (heads, kv, embed))."""
  out = {}
  for name, arr in flat.items():
    if arr.ndim == 3 and name.endswith("/kernel"):
      if name.endswith("/out/kernel"):
        arr = arr.reshape(arr.shape[0] * arr.shape[1], arr.shape[2])
      else:
        arr = arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2])
    out[name] = arr
  return out


def infer_config(flat: Mapping[str, np.ndarray], source: str = "t5x checkpoint",
                 head_dim: int = 64, **overrides) -> T5Config:
  """A T5Config from parameter shapes.

  num_heads comes from the relative-position tables (heads, buckets), so
  head_dim = joined_kv / num_heads; only if those tables are absent is
  head_dim assumed (default 64, Flan-T5's). relative_attention_max_distance
  cannot be seen in the weights: 128 (T5's) is assumed. dropout_rate and dtype
  take T5Config defaults unless overridden.
  """
  def shape(name):
    if name not in flat:
      raise CheckpointError(f"{source}: parameter '{name}' is missing; cannot infer "
                            f"the model config")
    return flat[name].shape

  vocab, d_model = shape("token_embedder/embedding")
  inner = shape("encoder/layers_0/attention/query/kernel")[1]
  mlp = shape("encoder/layers_0/mlp/wi_0/kernel")[1]
  if "encoder/relpos_bias/rel_embedding" in flat:
    heads, buckets = flat["encoder/relpos_bias/rel_embedding"].shape
  else:
    heads, buckets = inner // head_dim, 32
  if inner % heads:
    raise CheckpointError(f"{source}: joined_kv {inner} is not a multiple of "
                          f"{heads} heads")

  def n_layers(stack):
    found = {int(m.group(1)) for n in flat
             for m in [re.match(rf"{stack}/layers_(\d+)/", n)] if m}
    return max(found) + 1 if found else 0

  values = dict(vocab_size=int(vocab), d_model=int(d_model), num_heads=int(heads),
                head_dim=int(inner // heads), mlp_dim=int(mlp),
                num_encoder_layers=n_layers("encoder"),
                num_decoder_layers=n_layers("decoder"),
                relative_attention_num_buckets=int(buckets),
                logits_via_embedding="decoder/logits_dense/kernel" not in flat)
  values.update(overrides)
  return T5Config(**values)


def load_t5x(path: str, config: Optional[T5Config] = None,
             step: Optional[int] = None) -> tuple[T5Config, dict]:
  """Loads (config, float32 numpy params) from a t5x checkpoint: a T5 config inferred from
  the shapes, or the one in its model_config.json (any family; see t5x_config).

  `path` is a checkpoint_<step> dir, its msgpack `checkpoint` file, or a model
  dir (the latest step, or `step`). Without `config`, it is inferred from the
  parameter shapes (see `infer_config`); with it, the params are checked
  against it. Optimizer state is ignored.
  """
  ckpt_dir = find_checkpoint_dir(path, step)
  flat = _fix_kernel_ranks(read_target(ckpt_dir))
  from symbol_tuning.checkpoints import t5x_config  # pylint: disable=g-import-not-at-top
  if config is None:
    config = t5x_config.find_config(ckpt_dir)
  if config is None:
    if not any(name.startswith("encoder/") for name in flat):
      raise t5x_config.missing_config(ckpt_dir)
    config = infer_config(flat, ckpt_dir)
  params = unflatten(flat)
  check_params(config, params, ckpt_dir)
  return config, params


# -----------------------------------------------------------------------------
# Writing.
# -----------------------------------------------------------------------------
def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Largest chunk dividing `shape` with at most _CHUNK_BYTES: repeatedly cut
  the biggest dimension down to its next smaller divisor."""
  chunk = list(shape)
  limit = max(1, _CHUNK_BYTES // itemsize)
  while int(np.prod(chunk)) > limit:
    i = int(np.argmax(chunk))
    size = chunk[i]
    chunk[i] = next(d for d in range(size - 1, 0, -1) if shape[i] % d == 0)
  return [int(c) for c in chunk]


# t5x's Adafactor (t5x/adafactor.py, as t5_1_1/base.gin configures it) factors the second
# moment of a parameter of rank >= 2 whose second-largest dimension is at least this; every
# T5 parameter has rank <= 2, where its logical factor rules fall back to this heuristic.
_ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR = 128


def adafactor_initial_state(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """The state t5x's Adafactor (beta1=None) starts a parameter of `shape` with: zeros,
  `v_row`/`v_col` if its second moment is factored, else `v`; (1,)-shaped placeholders for
  the rest. A checkpoint that holds it restores in t5x.train like a public Flan-T5 one.

  (512, 1024) -> v_row (512,), v_col (1024,), v (1,), m (1,)
  (512,)      -> v (512,), v_row (1,), v_col (1,), m (1,)
  """
  state = {k: np.zeros((1,), np.float32) for k in ("m", "v", "v_col", "v_row")}
  order = np.argsort(shape)  # t5x's Adafactor._factored_dims: the two largest dims
  if len(shape) >= 2 and shape[order[-2]] >= _ADAFACTOR_MIN_DIM_SIZE_TO_FACTOR:
    row, col = int(order[-2]), int(order[-1])
    state["v_row"] = np.zeros(np.delete(shape, col), np.float32)
    state["v_col"] = np.zeros(np.delete(shape, row), np.float32)
  else:
    state["v"] = np.zeros(shape, np.float32)
  return state


def finetune_total_steps(checkpoint_path: str, finetune_steps: int) -> int:
  """t5x's TRAIN_STEPS (an absolute step) for `finetune_steps` steps on top of the
  checkpoint at `checkpoint_path`, read from its `checkpoint_<step>` name. Absolute, unlike
  TRAIN_STEPS_RELATIVE, so a preempted run restarted from its own newest checkpoint still
  stops at the same step. Used by gin/t5x/symbol_tuning.gin.

  ('gs://t5-data/pretrained_models/t5x/flan_t5_small/checkpoint_1198000', 4000) -> 1202000
  (None, 300) -> 300   (no checkpoint: random weights at step 0)
  """
  if not checkpoint_path:
    return int(finetune_steps)
  step = checkpoint_step(str(checkpoint_path).rstrip("/"))
  if step is None:
    raise ValueError(
        f"INITIAL_CHECKPOINT_PATH {checkpoint_path!r} does not end in checkpoint_<step>, so "
        "the step to stop at (its step + FINETUNE_STEPS) is unknown: point it at a "
        "checkpoint_<step> directory or set TRAIN_STEPS yourself")
  return step + int(finetune_steps)


def _write_zarr(tmp_dir: str, rel: str, arr: np.ndarray) -> dict[str, Any]:
  """Writes `arr` as float32 zarr (gzip) at tmp_dir/rel; returns the msgpack spec, whose
  path is relative to the checkpoint dir as in t5x's own checkpoints."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  arr = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
  metadata = {"compressor": {"id": "gzip"}, "shape": list(arr.shape),
              "chunks": _chunk_shape(arr.shape, arr.dtype.itemsize)}
  spec = {"driver": "zarr", "dtype": "float32",
          "kvstore": {"driver": "file", "path": rel}, "metadata": metadata}
  full = dict(spec, kvstore={"driver": "file", "path": os.path.join(tmp_dir, rel)})
  ts.open(full, create=True, open=True).result().write(arr).result()
  return spec


def save_t5x(params, path: str, step: int = 0) -> str:
  """Writes `path/checkpoint_<step>/` in t5x's layout (float32 zarr arrays, gzip);
  returns that directory. Besides the params ('target') and the step it holds t5x's
  initial Adafactor state (`adafactor_initial_state`), as the public Flan-T5 checkpoints
  hold their optimizer state, so t5x.train restores it with finetune.gin's defaults and
  continues from `step`."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  step = int(step)
  ckpt_dir = os.path.join(os.path.abspath(os.fspath(path)), f"checkpoint_{step}")
  tmp_dir = ckpt_dir + ".tmp"
  if os.path.exists(ckpt_dir):
    raise CheckpointError(f"{ckpt_dir} already exists")
  os.makedirs(tmp_dir, exist_ok=True)
  target, param_states = {}, {}
  for name, value in flatten(params).items():
    dotted = name.replace("/", ".")
    value = np.asarray(value)
    target[name] = _write_zarr(tmp_dir, "target." + dotted, value)
    for key, zeros in adafactor_initial_state(value.shape).items():
      # t5x gives v_row, v_col, m and placeholders no partitioning (adafactor.py's
      # derive_logical_axes) and keeps such arrays inline in the msgpack; its restore reads
      # a zarr array only for partitioned ones (it fails on an unpartitioned zarr array).
      partitioned = key == "v" and zeros.shape == value.shape and zeros.shape != (1,)
      param_states[f"{name}/{key}"] = (
          _write_zarr(tmp_dir, f"state.param_states.{dotted}.{key}", zeros)
          if partitioned else zeros)
  contents = {"version": VERSION,
              "optimizer": {"target": unflatten(target),
                            "state": {"step": np.asarray(step, dtype=np.int32),
                                      "param_states": unflatten(param_states)}}}
  with open(os.path.join(tmp_dir, MSGPACK_FILE), "wb") as f:
    f.write(serialization.msgpack_serialize(contents))
  os.rename(tmp_dir, ckpt_dir)
  return ckpt_dir
