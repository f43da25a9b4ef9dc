"""t5x checkpoints (the layout of the public Flan-T5 checkpoints).

A t5x model dir holds `checkpoint_<step>/` directories, each with
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
relative path from the local directory. bfloat16 arrays are read as float32.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import numpy as np

from symbol_tuning.checkpoints import CheckpointError, check_params, flatten, unflatten
from symbol_tuning.model.config import T5Config

VERSION = 3
MSGPACK_FILE = "checkpoint"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
_CHUNK_BYTES = 64 * 1024 * 1024  # t5x aims at 64 MiB zarr chunks


def all_steps(model_dir: str) -> list[int]:
  """Steps of the `checkpoint_<step>/checkpoint` dirs under `model_dir`, ascending."""
  steps = []
  if os.path.isdir(model_dir):
    for entry in os.listdir(model_dir):
      m = _STEP_DIR.match(entry)
      if m and os.path.isfile(os.path.join(model_dir, entry, MSGPACK_FILE)):
        steps.append(int(m.group(1)))
  return sorted(steps)


def is_t5x(path: str) -> bool:
  path = os.fspath(path)
  if os.path.isfile(path):
    return os.path.basename(path) == MSGPACK_FILE
  return os.path.isfile(os.path.join(path, MSGPACK_FILE)) or bool(all_steps(path))


def find_checkpoint_dir(path: str, step: Optional[int] = None) -> str:
  """The `checkpoint_<step>` dir for `path` (a step dir, its msgpack file, or a
  model dir, where the latest step is used unless `step` is given)."""
  path = os.fspath(path)
  if os.path.isfile(path) and os.path.basename(path) == MSGPACK_FILE:
    return os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: no such t5x checkpoint directory")
  if step is not None:
    candidate = os.path.join(path, f"checkpoint_{step}")
    if os.path.isfile(os.path.join(candidate, MSGPACK_FILE)):
      return candidate
    m = _STEP_DIR.match(os.path.basename(os.path.normpath(path)))
    if m and int(m.group(1)) == step and os.path.isfile(os.path.join(path, MSGPACK_FILE)):
      return path
    raise CheckpointError(f"{path}: no checkpoint_{step}/{MSGPACK_FILE} "
                          f"(steps found: {all_steps(path) or 'none'})")
  if os.path.isfile(os.path.join(path, MSGPACK_FILE)):
    return path
  steps = all_steps(path)
  if not steps:
    raise CheckpointError(
        f"{path}: not a t5x checkpoint (no '{MSGPACK_FILE}' file and no "
        f"checkpoint_<step>/{MSGPACK_FILE} below it)")
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
  if not os.path.isdir(local):
    raise CheckpointError(f"{ckpt_dir}: array directory '{os.path.basename(rel)}' for "
                          f"parameter '{name}' is missing")
  driver = spec.get("driver", "zarr")
  try:
    store = ts.open({"driver": driver, "kvstore": {"driver": "file", "path": local}},
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
  from flax import serialization  # pylint: disable=g-import-not-at-top
  msgpack_path = os.path.join(ckpt_dir, MSGPACK_FILE)
  with open(msgpack_path, "rb") as f:
    raw = f.read()
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
  """Loads (T5Config, float32 numpy params) from a t5x checkpoint.

  `path` is a checkpoint_<step> dir, its msgpack `checkpoint` file, or a model
  dir (the latest step, or `step`). Without `config`, it is inferred from the
  parameter shapes (see `infer_config`); with it, the params are checked
  against it. Optimizer state is ignored.
  """
  ckpt_dir = find_checkpoint_dir(path, step)
  flat = _fix_kernel_ranks(read_target(ckpt_dir))
  if config is None:
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


def save_t5x(params, path: str, step: int = 0) -> str:
  """Writes `path/checkpoint_<step>/` in t5x's layout (float32 zarr arrays, gzip);
  returns that directory. Only params ('target') and the step are written: t5x
  finetuning from it should restore with `assignment_map=((r'state.*', None),)`
  (finetune.gin's default) so the optimizer state starts fresh."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  step = int(step)
  ckpt_dir = os.path.join(os.path.abspath(os.fspath(path)), f"checkpoint_{step}")
  tmp_dir = ckpt_dir + ".tmp"
  if os.path.exists(ckpt_dir):
    raise CheckpointError(f"{ckpt_dir} already exists")
  os.makedirs(tmp_dir, exist_ok=True)
  specs = {}
  for name, value in flatten(params).items():
    arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    rel = "target." + name.replace("/", ".")
    metadata = {"compressor": {"id": "gzip"}, "shape": list(arr.shape),
                "chunks": _chunk_shape(arr.shape, arr.dtype.itemsize)}
    spec = {"driver": "zarr", "dtype": "float32",
            "kvstore": {"driver": "file", "path": rel}, "metadata": metadata}
    full = dict(spec, kvstore={"driver": "file", "path": os.path.join(tmp_dir, rel)})
    store = ts.open(full, create=True, open=True).result()
    store.write(arr).result()
    specs[name] = spec
  contents = {"version": VERSION,
              "optimizer": {"target": unflatten(specs),
                            "state": {"step": np.asarray(step, dtype=np.int32)}}}
  with open(os.path.join(tmp_dir, MSGPACK_FILE), "wb") as f:
    f.write(serialization.msgpack_serialize(contents))
  os.rename(tmp_dir, ckpt_dir)
  return ckpt_dir
