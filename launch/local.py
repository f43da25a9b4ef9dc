#!/usr/bin/env python3
"""Run a training or evaluation job on this machine, with t5x's flag conventions.

  python launch/local.py --gin_file=symbol_tuning_flan_t5_small.gin \
      --gin.MODEL_DIR="'/tmp/st_small'"                        # python -m t5x.train ...
  python launch/local.py --binary embedded --gin_file=FILE.gin --gin.X=Y
                                                               # symbol-tuning train ...
Flags: --gin_file (repeatable), --gin.NAME=VALUE (repeatable, passed byte-identical),
--mode train|eval, --binary t5x|embedded, --dry-run (print the command line instead),
--data_dir / --bigbench_dir / --vocab (environment of the job); arguments after a bare
`--` go to the binary as they are. Stdlib only.
"""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  pylint: disable=wrong-import-position

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent


def build_parser():
  parser = argparse.ArgumentParser(prog="local.py", description=__doc__.split("\n\n", 1)[0],
                                   allow_abbrev=False,
                                   epilog="--gin.NAME=VALUE (repeatable) overrides a binding.")
  parser.add_argument("--binary", choices=("t5x", "embedded"), default="t5x",
                      help="t5x's binaries (python -m t5x.train|eval) or the embedded trainer "
                           "(symbol-tuning train|eval)")
  parser.add_argument("--mode", choices=("train", "eval"), default="train")
  common.add_gin_file_flag(parser)
  parser.add_argument("--gin_search_paths",
                      help="comma-separated gin folders; default for t5x: this repo's gin/t5x")
  parser.add_argument("--data_dir", help="SYMBOL_TUNING_DATA_DIR for the job")
  parser.add_argument("--bigbench_dir", help="BIGBENCH_DIR for the job")
  parser.add_argument("--vocab", help="SYMBOL_TUNING_VOCAB for the job: flan_t5, local or a path")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the command line instead of running it")
  return parser


def command(args, gin_overrides, passthrough):
  """(argv, environment additions) of the job."""
  if args.binary == "t5x":
    argv = [sys.executable, "-m", f"t5x.{args.mode}"]
    search_paths = args.gin_search_paths or str(REPO_DIR / "gin" / "t5x")
  else:  # the project's CLI, by module so that it does not depend on PATH
    argv = [sys.executable, "-m", "symbol_tuning.cli", args.mode]
    search_paths = args.gin_search_paths
  if search_paths:
    argv.append(f"--gin_search_paths={search_paths}")
  argv += [f"--gin_file={name}" for name in args.gin_file]
  argv += gin_overrides
  if args.binary == "t5x":
    argv.append("--alsologtostderr")
  argv += passthrough
  env = {name: value for name, value in (("SYMBOL_TUNING_DATA_DIR", args.data_dir),
                                         ("BIGBENCH_DIR", args.bigbench_dir),
                                         ("SYMBOL_TUNING_VOCAB", args.vocab)) if value}
  return argv, env


def main(argv=None) -> int:
  own, gin_overrides, passthrough = common.split_argv(sys.argv[1:] if argv is None else argv)
  args = build_parser().parse_args(own)
  if not args.gin_file:
    raise SystemExit("error: give at least one --gin_file")
  job, env = command(args, gin_overrides, passthrough)
  return common.run([job], args.dry_run, env=env)


if __name__ == "__main__":
  sys.exit(main())
