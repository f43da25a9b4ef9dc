"""Our own params format: an orbax checkpoint of the params dict + model_config.json.

Layout of `path/`:
  model_config.json   the config's to_dict(), tagged with its architecture
  params/             orbax StandardCheckpointer directory of the params dict

The params dict is exactly the model's 'params' collection (t5x names), so the
same subtree of a full orbax training state restores into it and vice versa.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from symbol_tuning import paths
from symbol_tuning.checkpoints import CheckpointError, check_params, flatten, unflatten
from symbol_tuning.models import registry
from symbol_tuning.models.base import CONFIG_FILE, ModelConfig, config_json

PARAMS_DIR = "params"


def is_native(path: str) -> bool:
  p = paths.path(path)
  return ((p / CONFIG_FILE).is_file() and (p / PARAMS_DIR).is_dir()) or \
      trainer_checkpoint(path) is not None


def trainer_checkpoint(path: str, step: Optional[int] = None) -> Optional[str]:
  """The checkpoint_<step>/ dir of an embedded-trainer run (MODEL_DIR or the step dir
  itself: orbax items `state/` and `meta/`), newest unless `step` is given; else None."""
  def complete(d):
    # On gs:// orbax writes in place and commit_success.txt last (no atomic rename).
    return (d / "state").is_dir() and (d / "meta").is_dir() and (
        not paths.is_remote(d) or (d / "commit_success.txt").exists())
  p = paths.path(path)
  if complete(p):
    return os.fspath(p)
  if not p.is_dir():
    return None
  steps = sorted(int(child.name.split("_", 1)[1]) for child in p.iterdir()
                 if child.name.startswith("checkpoint_")
                 and child.name.split("_", 1)[1].isdigit() and complete(child))
  if step is not None:
    return os.fspath(p / f"checkpoint_{step}") if step in steps else None
  return os.fspath(p / f"checkpoint_{steps[-1]}") if steps else None


def save_native(config: ModelConfig, params, path: str, overwrite: bool = True) -> None:
  """Writes `path/model_config.json` and `path/params/` (float32)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = paths.path(path)
  check_params(config, params, "save_native")
  params = unflatten({k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()})
  path.mkdir(parents=True, exist_ok=True)
  target = path / PARAMS_DIR
  if target.exists():
    if not overwrite:
      raise CheckpointError(f"{target} already exists")
    target.rmtree()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, params)
    ckptr.wait_until_finished()
  (path / CONFIG_FILE).write_text(config_json(config))


def load_config(path: str) -> ModelConfig:
  cfg_path = paths.path(path) / CONFIG_FILE
  try:
    return registry.config_from_dict(json.loads(cfg_path.read_text()))
  except FileNotFoundError as e:
    raise CheckpointError(f"{path}: no {CONFIG_FILE}; not a native checkpoint") from e
  except (json.JSONDecodeError, TypeError, ValueError) as e:
    raise CheckpointError(f"{cfg_path}: invalid model config ({e})") from e


def load_native(path: str, config: Optional[ModelConfig] = None) -> tuple[ModelConfig, dict]:
  """Loads (ModelConfig, float32 numpy params); checks them against `config` if given."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.fspath(paths.path(path))
  run_dir = None if (paths.path(path) / CONFIG_FILE).is_file() else trainer_checkpoint(path)
  if run_dir is not None:
    return _load_trainer(run_dir, config)
  stored = load_config(path)
  target = paths.path(path) / PARAMS_DIR
  if not target.is_dir():
    raise CheckpointError(f"{path}: no {PARAMS_DIR}/ directory; not a native checkpoint")
  with ocp.PyTreeCheckpointer() as ckptr:
    try:
      meta = ckptr.metadata(target)
      tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
      restore_args = _numpy_restore_args(tree)
      restored = ckptr.restore(target, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:  # orbax raises many error types
      raise CheckpointError(f"{target}: cannot restore params ({e})") from e
  params = unflatten({k: np.asarray(v, dtype=np.float32)
                      for k, v in flatten(restored).items()})
  use = stored if config is None else config
  check_params(use, params, path)
  return use, params


def _load_trainer(step_dir: str, config: Optional[ModelConfig]) -> tuple[ModelConfig, dict]:
  """Params of an embedded-trainer checkpoint (the optimizer state is read and dropped)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  meta_file = paths.path(step_dir) / "meta" / "metadata"
  try:
    stored = registry.config_from_dict(json.loads(meta_file.read_text())["model_config"])
  except (OSError, KeyError, ValueError) as e:
    raise CheckpointError(f"{step_dir}: unreadable trainer metadata ({e})") from e
  target = paths.path(step_dir) / "state"
  with ocp.PyTreeCheckpointer() as ckptr:
    try:
      meta = ckptr.metadata(target)
      tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
      restored = ckptr.restore(target, args=ocp.args.PyTreeRestore(
          item={"params": tree["params"]}, partial_restore=True,
          restore_args={"params": _numpy_restore_args(tree["params"])}))
    except Exception as e:  # orbax raises many error types
      raise CheckpointError(f"{target}: cannot restore params ({e})") from e
  params = unflatten({k: np.asarray(v, dtype=np.float32)
                      for k, v in flatten(restored["params"]).items()})
  use = stored if config is None else config
  check_params(use, params, step_dir)
  return use, params


def _numpy_restore_args(tree):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if isinstance(tree, dict):
    return {k: _numpy_restore_args(v) for k, v in tree.items()}
  return ocp.RestoreArgs(restore_type=np.ndarray)
