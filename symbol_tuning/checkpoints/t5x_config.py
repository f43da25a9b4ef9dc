"""The model config that travels with a t5x checkpoint: `model_config.json`.

A T5 checkpoint's shapes tell its whole config (t5x.infer_config). Other families' do not
(RoPE base and scaling, norm epsilon, the family itself), so their config travels beside the
checkpoint as the family's to_dict() (its `architecture` tag picks the family):

  DST/model_config.json, DST/checkpoint_<step>/model_config.json   convert --to t5x
  MODEL_DIR/model_config.json                                      t5x.train with our gin
                                                                   (models/decoder/t5x_module)

A checkpoint_<step> dir is read with the config found beside it or in its model dir, or
with `--config NAME`.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from etils import epath

from symbol_tuning.checkpoints import CheckpointError
from symbol_tuning.models import registry
from symbol_tuning.models.base import CONFIG_FILE, ModelConfig, config_json

def find_config(ckpt_dir: str) -> Optional[ModelConfig]:
  """The config in ckpt_dir/model_config.json, else in its model dir; None if neither has
  one."""
  for where in (epath.Path(ckpt_dir), epath.Path(ckpt_dir).parent):
    path = where / CONFIG_FILE
    if path.is_file():
      try:
        return registry.config_from_dict(json.loads(path.read_text()))
      except ValueError as e:
        raise CheckpointError(f"{path}: not a model config ({e})") from e
  return None


def missing_config(ckpt_dir: str) -> CheckpointError:
  return CheckpointError(
      f"{ckpt_dir}: a checkpoint without {CONFIG_FILE} (looked in it and in its model dir) "
      f"and not a T5 one (no encoder): pass --config NAME, or copy the {CONFIG_FILE} that "
      f"`convert --to t5x` wrote (t5x.train writes one into MODEL_DIR with "
      f"gin/t5x/symbol_tuning_decoder.gin)")


def write_config(config: ModelConfig, ckpt_dir: str) -> None:
  """model_config.json in the checkpoint_<step> dir and in its model dir."""
  text = config_json(config)
  for where in (ckpt_dir, os.path.dirname(ckpt_dir)):
    epath.Path(where, CONFIG_FILE).write_text(text)
