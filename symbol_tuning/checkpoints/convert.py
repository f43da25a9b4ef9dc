"""Format detection, loading any format, and conversion (+ the `convert` CLI).

  symbol-tuning convert SRC DST [--to hf|t5x|native] [--step N] [--config NAME]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Optional, Sequence

from symbol_tuning import paths
from symbol_tuning.checkpoints import CheckpointError, check_params
from symbol_tuning.checkpoints import hf as hf_lib
from symbol_tuning.checkpoints import native as native_lib
from symbol_tuning.checkpoints import t5x as t5x_lib
from symbol_tuning.checkpoints import t5x_config
from symbol_tuning.models import registry
from symbol_tuning.models.base import ModelConfig

FORMATS = ("hf", "t5x", "native")


def detect_format(path: str) -> str:
  """'hf' (config.json), 'native' (model_config.json + params/) or 't5x'
  (a `checkpoint` msgpack file, an Orbax checkpoint_<step>/state/, or checkpoint_<step>/ dirs)."""
  path = os.fspath(path)
  where = paths.path(path)
  if not where.exists():
    raise CheckpointError(f"{path}: no such file or directory")
  if where.is_dir():
    if native_lib.is_native(path):
      return "native"
    if (where / hf_lib.CONFIG_FILE).is_file():
      return "hf"
  if t5x_lib.is_t5x(path):
    return "t5x"
  raise CheckpointError(
      f"{path}: no model checkpoint found; expected a HuggingFace dir (config.json + "
      f"model.safetensors), a t5x checkpoint (checkpoint_<step>/ with a msgpack 'checkpoint' "
      f"file or an Orbax 'state/' dir) or a "
      f"native one (model_config.json + params/)")


def load_any(path: str, config: Optional[ModelConfig] = None,
             step: Optional[int] = None) -> tuple[ModelConfig, dict]:
  """Loads (model config, float32 numpy params) from any supported format; if
  `config` is given, a checkpoint that does not fit it raises CheckpointError."""
  fmt = detect_format(path)
  if fmt == "hf" and paths.is_remote(path):
    # The safetensors reader maps local files: a gs:// HF folder is copied down first.
    local = paths.download_files(path, [p.name for p in paths.path(path).iterdir()
                                        if p.is_file()])
    try:
      return load_any(local, config, step)
    finally:
      shutil.rmtree(local, ignore_errors=True)
  if fmt == "hf":
    return hf_lib.load_hf(path, config)
  if fmt == "t5x":
    return t5x_lib.load_t5x(path, config, step=step)
  return native_lib.load_native(path, config)


def save_any(config: ModelConfig, params, path: str, fmt: str, step: int = 0) -> str:
  if paths.is_remote(path) and fmt != "native":
    # The HF and t5x writers write local files: written in a local folder, then copied.
    with tempfile.TemporaryDirectory(prefix="symbol_tuning_convert_") as local:
      written = save_any(config, params, local, fmt, step)
      paths.upload_dir(local, path)
    rel = os.path.relpath(written, local)
    return os.fspath(paths.path(path) if rel == "." else paths.path(path) / rel)
  if fmt == "hf":
    hf_lib.save_hf(config, params, path)
    return os.fspath(path)
  if fmt == "t5x":
    check_params(config, params, "save_t5x")
    ckpt_dir = t5x_lib.save_t5x(params, path, step)
    if not registry.family_of(config).config_in_t5x_shapes:
      t5x_config.write_config(config, ckpt_dir)
    return ckpt_dir
  if fmt == "native":
    native_lib.save_native(config, params, path)
    return os.fspath(path)
  raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")


def convert(src: str, dst: str, to_format: str = "native", *,
            config: Optional[ModelConfig] = None, step: Optional[int] = None) -> str:
  """Converts checkpoint `src` (any format) to `to_format` at `dst`.

  `step` selects the source step of a t5x model dir and names the written
  t5x step (default: the source's step, else 0). Returns the written path.
  """
  if to_format not in FORMATS:
    raise ValueError(f"unknown checkpoint format {to_format!r}; known: {', '.join(FORMATS)}")
  src_format = detect_format(src)
  cfg, params = load_any(src, config, step=step)
  out_step = step
  if out_step is None and src_format == "t5x":
    out_step = t5x_lib.checkpoint_step(t5x_lib.find_checkpoint_dir(src))
  return save_any(cfg, params, dst, to_format, step=out_step or 0)


# -----------------------------------------------------------------------------
# CLI.
# -----------------------------------------------------------------------------
def _add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("src", help="checkpoint to read (HF dir, t5x dir, or native dir)")
  parser.add_argument("dst", help="directory to write")
  parser.add_argument("--to", dest="to_format", choices=FORMATS, default="native",
                      help="output format (default: native)")
  parser.add_argument("--step", type=int, default=None,
                      help="t5x: step to read from a model dir, and step to write")
  parser.add_argument("--config", default=None,
                      help="named model config the checkpoint must match "
                           "(tiny, small, base, large, xl, xxl; llama-tiny, mistral-tiny, "
                           "gemma2-tiny, gemma3-tiny, llama-100m, gemma2-100m, ...)")


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `convert` subcommand to an argparse subparsers object."""
  parser = subparsers.add_parser(
      "convert", help="convert a model checkpoint between hf, t5x and native formats",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_arguments(parser)
  parser.set_defaults(func=run)
  return parser


def run(args: argparse.Namespace) -> int:
  try:
    config = registry.get_config(args.config) if getattr(args, "config", None) else None
    out = convert(args.src, args.dst, args.to_format, config=config,
                  step=getattr(args, "step", None))
  except (CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.to_format} checkpoint to {out}")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="symbol-tuning convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_arguments(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
