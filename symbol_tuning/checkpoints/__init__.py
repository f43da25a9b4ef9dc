"""Model checkpoints: HuggingFace safetensors, t5x (msgpack + zarr), native (orbax).

All loaders return `(config, params)` where params is the nested dict of
float32 numpy arrays laid out as the config's family network (t5x names; see
`symbol_tuning.models`). The HF loader and saver serve every family through its
name map (`models/<family>/hf.py`); t5x's format is read and written for every family,
with a model_config.json beside it where the shapes do not tell the config
(`ModelFamily.config_in_t5x_shapes`, checkpoints/t5x_config.py).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from symbol_tuning.models.base import CheckpointError  # defined with the families, which raise it

ParamTree = dict[str, Any]


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x} (leaves are anything but mappings)."""
  out: dict[str, Any] = {}

  def walk(node, prefix):
    for key, value in node.items():
      name = f"{prefix}{sep}{key}" if prefix else str(key)
      if isinstance(value, Mapping):
        walk(value, name)
      else:
        out[name] = value

  walk(tree, "")
  return out


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> ParamTree:
  out: ParamTree = {}
  for name, value in flat.items():
    node = out
    *parents, leaf = name.split(sep)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def check_params(config, params: Mapping[str, Any], source: str = "checkpoint") -> None:
  """Raises CheckpointError naming the first parameter that does not fit `config`."""
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top
  expected = flatten(registry.param_shapes(config))
  found = flatten(params)
  for name, spec in expected.items():
    if name not in found:
      raise CheckpointError(
          f"{source}: parameter '{name}' is missing (expected shape "
          f"{tuple(spec.shape)} for this config)")
    shape = tuple(np.shape(found[name]))
    if shape != tuple(spec.shape):
      raise CheckpointError(
          f"{source}: parameter '{name}' has shape {shape}, expected "
          f"{tuple(spec.shape)} for this config")
  extra = sorted(set(found) - set(expected))
  if extra:
    raise CheckpointError(
        f"{source}: unexpected parameter '{extra[0]}' (not in this config's model"
        + (f"; {len(extra) - 1} more" if len(extra) > 1 else "") + ")")


def to_numpy(params: Mapping[str, Any]) -> ParamTree:
  """Nested dict of float32 numpy arrays (copies device arrays to host)."""
  return unflatten({k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()})


# Submodules import CheckpointError & co. from here, so import them last.
from symbol_tuning.checkpoints.hf import load_hf, save_hf  # noqa: E402
from symbol_tuning.checkpoints.native import load_native, save_native  # noqa: E402
from symbol_tuning.checkpoints.t5x import load_t5x, save_t5x  # noqa: E402
# `convert` stays the submodule (CLI: `convert.register`, `convert.convert(...)`).
from symbol_tuning.checkpoints import convert  # noqa: E402
from symbol_tuning.checkpoints.convert import detect_format, load_any  # noqa: E402

__all__ = [
    "CheckpointError", "check_params", "flatten", "unflatten", "to_numpy",
    "load_hf", "save_hf", "load_t5x", "save_t5x", "load_native", "save_native",
    "detect_format", "load_any", "convert",
]
