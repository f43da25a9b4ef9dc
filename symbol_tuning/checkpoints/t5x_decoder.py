"""t5x checkpoints of decoder-only models (our decoder network as t5x's DecoderOnlyModel
module, symbol_tuning/models/decoder/t5x_module.py).

The params are t5x's 'target' tree in `decoder_network`'s layout ({'decoder': {...}}), in
the same msgpack + zarr (written) or Orbax (t5x.train's default, read) layout as T5's
(checkpoints/t5x.py). The shapes do not tell the rest of the model (RoPE base and scaling,
norm epsilon, family), so the config travels as `model_config.json` (DecoderConfig.to_dict):

  DST/model_config.json, DST/checkpoint_<step>/model_config.json   convert --to t5x
  MODEL_DIR/model_config.json                                      t5x.train with our gin
                                                                   (t5x_module.decoder_config)

A checkpoint_<step> dir is read with the config found beside it or in its model dir, or
with `--config NAME`.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Optional

from etils import epath

from symbol_tuning.checkpoints import CheckpointError, check_params, unflatten
from symbol_tuning.checkpoints import t5x as t5x_lib
from symbol_tuning.model.decoder_config import DecoderConfig

CONFIG_FILE = "model_config.json"
EMBEDDING = "decoder/token_embedder/embedding"


def is_decoder_only(flat: Mapping[str, object]) -> bool:
  """Whether a flat t5x target tree is a decoder-only network's (ours or t5x's
  examples/decoder_only: both keep the embedding under 'decoder/')."""
  return EMBEDDING in flat and not any(name.startswith("encoder/") for name in flat)


def find_config(ckpt_dir: str) -> DecoderConfig:
  """The DecoderConfig in ckpt_dir/model_config.json, else in its model dir."""
  for where in (epath.Path(ckpt_dir), epath.Path(ckpt_dir).parent):
    path = where / CONFIG_FILE
    if path.is_file():
      try:
        data = json.loads(path.read_text())
      except ValueError as e:
        raise CheckpointError(f"{path}: not JSON ({e})") from e
      if data.get("architecture") != "decoder_only":
        raise CheckpointError(f"{path}: not a decoder-only model config "
                              f"(architecture {data.get('architecture')!r})")
      return DecoderConfig.from_dict(data)
  raise CheckpointError(
      f"{ckpt_dir}: a decoder-only t5x checkpoint without {CONFIG_FILE} (looked in it and "
      f"in its model dir): pass --config NAME, or copy the {CONFIG_FILE} that `convert --to "
      f"t5x` wrote (t5x.train writes one into MODEL_DIR with gin/t5x/symbol_tuning_decoder.gin)")


def load(ckpt_dir: str, flat: Mapping[str, object],
         config: Optional[DecoderConfig] = None) -> tuple[DecoderConfig, dict]:
  """(config, params) of a decoder-only checkpoint_<step> dir whose target is `flat`."""
  if config is None:
    config = find_config(ckpt_dir)
  params = unflatten(dict(flat))
  check_params(config, params, ckpt_dir)
  return config, params


def save(config: DecoderConfig, params, path: str, step: int = 0) -> str:
  """Writes path/checkpoint_<step>/ (t5x's layout, with t5x's initial Adafactor state, so
  t5x.train continues from `step`) and model_config.json in both; returns the step dir."""
  check_params(config, params, "save_t5x")
  ckpt_dir = t5x_lib.save_t5x(params, path, step)
  text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
  for where in (ckpt_dir, os.path.dirname(ckpt_dir)):
    epath.Path(where, CONFIG_FILE).write_text(text)
  return ckpt_dir
