"""`symbol-tuning train`: the embedded trainer, with t5x's train-binary flags.

  symbol-tuning train --gin_file=local/symbol_tuning_bigbench_tiny.gin \\
      --gin.MODEL_DIR="'/tmp/run'" --gin.TRAIN_STEPS=200

--gin_file (repeatable) is looked up in --gin_search_paths, then in the package's gin/
folder; --gin_bindings / --gin.X=Y (repeatable) override macros, as in t5x.
"""
import functools
import logging
import sys

from symbol_tuning.commands import CliError


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "train", help="finetune with the embedded trainer (gin-configured, t5x flags)",
      description="Flags as t5x's train binary: --gin_file, --gin.X=Y, --gin_bindings, "
                  "--gin_search_paths.")
  add_gin_flags(p)
  p.add_argument("--no_progress", action="store_true", help="plain log lines, no bar")
  p.set_defaults(func=run, accepts_gin_shorthand=True)


def add_gin_flags(parser) -> None:
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable); relative paths search --gin_search_paths "
                           "and the package's gin/ folder")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding such as MODEL_DIR='/tmp/run' (repeatable)")
  parser.add_argument("--gin_search_paths", default="",
                      help="comma-separated folders to look for gin files in")


def gin_shorthand(extra: list[str]) -> list[str]:
  """t5x's `--gin.X=Y` shorthand -> gin bindings `X = Y`; anything else is an error."""
  bindings = []
  for arg in extra:
    if not arg.startswith("--gin.") or "=" not in arg:
      raise CliError(f"unrecognized argument {arg!r} (gin overrides are --gin.NAME=VALUE)")
    name, value = arg[len("--gin."):].split("=", 1)
    bindings.append(f"{name} = {value}")
  return bindings


@functools.cache
def _register_remote_gin_reader(gin, paths_lib) -> None:
  """gin opens files with open(); gs:// gin files and search paths go through etils.epath.
  Once per process: gin keeps every reader it is given."""
  gin.config.register_file_reader(paths_lib.open_remote, paths_lib.is_remote_file)


def parse_gin(files: list[str], bindings: list[str], search_paths: str) -> None:
  """Parses gin files and bindings; a typo is a one-line error naming file and line."""
  import gin  # pylint: disable=g-import-not-at-top

  from symbol_tuning import settings  # pylint: disable=g-import-not-at-top

  if not files:
    raise CliError("no --gin_file given; e.g. --gin_file=local/symbol_tuning_bigbench_tiny.gin")
  from symbol_tuning import paths as paths_lib  # pylint: disable=g-import-not-at-top

  _register_remote_gin_reader(gin, paths_lib)
  paths = [p for p in search_paths.split(",") if p] + [str(settings.gin_dir())]
  for path in paths:
    gin.add_config_file_search_path(path)
  # gin tries each include relative to the working directory first and logs an ERROR
  # for every miss before finding it on the search path; keep that noise out.
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except (IOError, OSError) as e:
    raise CliError(f"gin: {e}") from None
  except (ValueError, SyntaxError, KeyError) as e:
    message = " ".join(str(e).split())
    raise CliError(f"gin: {message[:400]}") from None
  finally:
    root.setLevel(level)


def _referenced_macros() -> set[str]:
  """Names of the macros some binding refers to (%NAME), after parsing: read off gin's
  public config_str(), which writes every binding with its references as %NAME (a '%' inside
  a string value can add a name, never hide one)."""
  import re  # pylint: disable=g-import-not-at-top

  import gin  # pylint: disable=g-import-not-at-top

  return {name.split("/")[0] for name in re.findall(r"%([A-Za-z_][\w./]*)", gin.config_str())}


def check_macros(bindings: list[str]) -> None:
  """A --gin.NAME=VALUE for a macro nothing uses is a typo (gin itself accepts it)."""
  import difflib  # pylint: disable=g-import-not-at-top

  used = _referenced_macros()
  for binding in bindings:
    name = binding.split("=", 1)[0].strip()
    if name.isupper() and name not in used:
      close = difflib.get_close_matches(name, sorted(used), n=1)
      raise CliError(f"gin: no gin file uses the macro {name}"
                     + (f"; did you mean {close[0]}?" if close else ""))


def run(args) -> int:
  from symbol_tuning.training import trainer  # pylint: disable=g-import-not-at-top

  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import

  bindings = args.gin_bindings + gin_shorthand(args.extra)
  parse_gin(args.gin_file, bindings, args.gin_search_paths)
  check_macros(bindings)
  try:
    cfg = trainer.TrainConfig()  # pylint: disable=no-value-for-parameter
  except (TypeError, ValueError) as e:
    raise CliError(f"gin: {' '.join(str(e).split())[:400]}") from None
  last = trainer.train(cfg, progress=not args.no_progress)
  print(f"trained to step {last['step']} in {cfg.model_dir}"
        + (f"; loss {last['loss']:.4f}" if "loss" in last else ""), file=sys.stderr)
  return 0
