"""HuggingFace checkpoints (config.json + safetensors) <-> our params, for every family.

One loader and one saver; what differs between families (the tensor name map, which
tensors are transposed, config.json <-> our config, tied heads) is the family's
`hf.py` (`ModelFamily.hf`), chosen by config.json's `model_type` through
`models.registry` (a model_type no family reads is one line naming the supported ones).

Reading uses the `safetensors` numpy API (and, for bfloat16 tensors, which
numpy cannot name, a direct read of the documented safetensors layout). Pickled
weights (pytorch_model.bin) are never loaded.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Any

import numpy as np

from symbol_tuning.checkpoints import CheckpointError, check_params, flatten, unflatten

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                 "flax_model.msgpack")


# -----------------------------------------------------------------------------
# Config.
# -----------------------------------------------------------------------------
def read_config(path: str) -> dict[str, Any]:
  """The config.json dict of a HF model directory (CheckpointError naming the file)."""
  cfg_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{path}: no {CONFIG_FILE}; not a HuggingFace model directory")
  try:
    with open(cfg_path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{cfg_path}: cannot read JSON ({e})") from e
  if not isinstance(data, dict):
    raise CheckpointError(f"{cfg_path}: expected a JSON object")
  return data


# -----------------------------------------------------------------------------
# Safetensors reading.
# -----------------------------------------------------------------------------
_RAW_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _read_raw(filename: str, name: str) -> np.ndarray:
  """Reads one tensor from the safetensors layout directly (for bfloat16)."""
  with open(filename, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
    info = header[name]
    dtype = info["dtype"]
    if dtype not in _RAW_DTYPES:
      raise CheckpointError(f"{filename}: tensor '{name}' has unsupported dtype {dtype}")
    start, end = info["data_offsets"]
    f.seek(8 + header_len + start)
    arr = np.frombuffer(f.read(end - start), dtype=np.dtype(_RAW_DTYPES[dtype]).newbyteorder("<"))
  if dtype == "BF16":  # bfloat16 = upper 16 bits of a float32
    arr = (arr.astype(np.uint32) << 16).view(np.float32)
  return arr.reshape(info["shape"]).astype(np.float32)


class TensorSource:
  """Lazy access to the tensors of one HF model directory (single or sharded)."""

  def __init__(self, path: str):
    self.path = path
    single = os.path.join(path, WEIGHTS_FILE)
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
      files = [single]
      self._where = None
    elif os.path.isfile(index):
      try:
        with open(index, encoding="utf-8") as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: cannot read 'weight_map' ({e})") from e
      self._where = {k: os.path.join(path, v) for k, v in weight_map.items()}
      files = sorted(set(self._where.values()))
      for fn in files:
        if not os.path.isfile(fn):
          raise CheckpointError(f"{index}: shard {os.path.basename(fn)} is missing")
    else:
      pickled = [p for p in _PICKLE_FILES if os.path.exists(os.path.join(path, p))]
      if pickled:
        raise CheckpointError(
            f"{path}: only {pickled[0]} found; pickled/framework weights are not "
            f"loaded: convert the model to safetensors ({WEIGHTS_FILE}) first, e.g. "
            f"with transformers `model.save_pretrained(dir, safe_serialization=True)`")
      raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE} found")
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    self._handles = {}
    self._keys: dict[str, str] = {}
    for fn in files:
      try:
        handle = safe_open(fn, framework="np")
      except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{fn}: not a readable safetensors file ({e})") from e
      self._handles[fn] = handle
      for key in handle.keys():
        self._keys[key] = fn

  def keys(self) -> set[str]:
    return set(self._keys)

  def __contains__(self, name: str) -> bool:
    return name in self._keys

  def file_of(self, name: str) -> str:
    return self._keys.get(name) or (self._where or {}).get(name) or os.path.join(
        self.path, WEIGHTS_FILE)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handles[self._keys[name]].get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    fn = self._keys[name]
    try:
      arr = self._handles[fn].get_tensor(name)
    except TypeError:  # bfloat16: numpy has no name for it
      return _read_raw(fn, name)
    return np.asarray(arr, dtype=np.float32)


def read_tensor(source: TensorSource, name: str, our_shape, transpose: bool,
                hint: str = "") -> np.ndarray:
  """Tensor `name` in our layout, checked against our param shape `our_shape` (a missing
  or misshapen tensor raises CheckpointError naming it and its file; `hint` follows a
  'missing' message)."""
  want = tuple(our_shape)
  want = want[::-1] if transpose else want
  if name not in source:
    raise CheckpointError(
        f"{source.file_of(name)}: tensor '{name}' is missing (expected shape {want}){hint}")
  got = source.shape(name)
  if got != want:
    raise CheckpointError(
        f"{source.file_of(name)}: tensor '{name}' has shape {got}, expected {want}")
  arr = source.get(name)
  return np.ascontiguousarray(arr.T) if transpose else arr


def family_of_hf(data: dict[str, Any], source: str):
  """The model family that reads config.json `data` (registry.for_hf_model_type)."""
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top
  try:
    return registry.for_hf_model_type(data.get("model_type"))
  except ValueError as e:
    raise CheckpointError(f"{source}: {e}") from None


def load_hf(path: str, config=None) -> tuple[Any, dict]:
  """Loads a HF model directory as (our config, float32 numpy params), for any family.

  `config`, if given, decides the expected shapes (a tensor that does not fit it raises
  CheckpointError naming the tensor; its dtype, dropout, remat are kept) and must be of
  the checkpoint's family.
  """
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a directory")
  data = read_config(path)
  cfg_file = os.path.join(path, CONFIG_FILE)
  family = family_of_hf(data, cfg_file)
  if config is not None and registry.family_of(config) is not family:
    raise CheckpointError(f"{path}: a {family.name} model ({data.get('model_type')}), but the "
                          f"config is a {registry.family_of(config).name} one")
  mapping = family.hf
  mapping.config_from_hf(data, cfg_file)  # validates before touching weights
  source = TensorSource(path)
  hf_config = mapping.config_from_hf(data, cfg_file, source, config)
  expected = flatten(family.param_shapes(hf_config))

  def read(hf_name, ours, hint):
    return read_tensor(source, hf_name, expected[ours].shape, mapping.transposed(ours), hint)

  flat = mapping.read_params(source, hf_config, data, read)
  known = {n for n, _ in mapping.name_map(hf_config)}
  unexpected = sorted(k for k in source.keys() - known if not mapping.ignored(k, hf_config))
  if unexpected:
    raise CheckpointError(f"{source.file_of(unexpected[0])}: unexpected tensor "
                          f"'{unexpected[0]}' (not part of {mapping.describe(hf_config)})")
  params = unflatten(flat)
  check_params(hf_config, params, path)
  return hf_config, params


def save_hf(config, params, path: str, max_shard_bytes: int = 5 * 1024 ** 3) -> None:
  """Writes config.json, generation_config.json and model.safetensors (sharded with an
  index past `max_shard_bytes`) that transformers loads as the config's model."""
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  mapping = registry.family_of(config).hf
  check_params(config, params, "save_hf")
  hf_json = mapping.config_to_hf(config)  # validates before writing anything
  flat = flatten(params)
  tensors = {}
  for hf_name, ours in mapping.name_map(config):
    arr = np.asarray(flat[ours], dtype=np.float32)
    tensors[hf_name] = np.ascontiguousarray(arr.T) if mapping.transposed(ours) else arr
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(hf_json, f, indent=2, sort_keys=True)
  with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump(mapping.generation_config(config), f, indent=2)
  write_safetensors(tensors, path, max_shard_bytes)


def write_safetensors(tensors: dict[str, np.ndarray], path: str,
                      max_shard_bytes: int = 5 * 1024 ** 3) -> None:
  """Writes `tensors` as model.safetensors, or as model-0000i-of-0000n.safetensors
  shards plus model.safetensors.index.json past `max_shard_bytes`; stale weight
  files of an earlier save in `path` are removed first."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  meta = {"format": "pt"}
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, arr in tensors.items():
    if shards[-1] and size + arr.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += arr.nbytes
  for stale in os.listdir(path):
    if stale in (WEIGHTS_FILE, INDEX_FILE) or re.fullmatch(
        r"model-\d+-of-\d+\.safetensors", stale):
      os.remove(os.path.join(path, stale))
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, WEIGHTS_FILE), metadata=meta)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, fname), metadata=meta)
    weight_map.update({name: fname for name in shard})
  total = sum(a.nbytes for a in tensors.values())
  with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


__all__ = ["load_hf", "save_hf", "read_config", "TensorSource", "family_of_hf"]
