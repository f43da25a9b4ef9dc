"""What the launchers share: t5x-style gin overrides, printing and running commands.

Stdlib only: the launchers run on a laptop that has gcloud but not this project installed.
"""
import argparse
import os
import shlex
import subprocess
import sys

GIN_PREFIX = "--gin."


def split_argv(argv):
  """argv -> (own flags, gin overrides, passthrough args), order kept within each.

  `--gin.NAME=VALUE` tokens are taken out before argparse sees them: argparse would read a
  token holding a space as a positional, and could match `--gin.` against its own flags'
  prefixes. They stay byte-identical: t5x's binaries parse them (gin_utils.rewrite_gin_args).
  Everything after a bare `--` goes to the binary verbatim: e.g. t5x.train's
  `--seqio_additional_cache_dirs=gs://BUCKET/seqio_cache` to read a cache written by seqio's
  cache_tasks_main, with `--gin_file=cached.gin` and a cached twin as MIXTURE_OR_TASK_NAME
  (README, Data at scale); t5x.eval has no such flag.
  """
  argv = list(argv)
  passthrough = []
  if "--" in argv:
    cut = argv.index("--")
    argv, passthrough = argv[:cut], argv[cut + 1:]
  own, gin = [], []
  for arg in argv:
    if arg.startswith(GIN_PREFIX):
      if "=" not in arg or arg.index("=") == len(GIN_PREFIX):
        raise SystemExit(f"error: gin overrides take the form --gin.NAME=VALUE, got {arg!r}")
      gin.append(arg)
    else:
      own.append(arg)
  return own, gin, passthrough


def add_gin_file_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                      help="gin file for the binary, relative to --gin_search_paths "
                           "(repeatable, in order; later files override earlier ones)")


def format_command(argv, env=None) -> str:
  """One shell line that runs argv (with env assignments first), quoted for a POSIX shell."""
  # NAME=value is an assignment only while NAME is unquoted: quote the value alone.
  assignments = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
  return " ".join(assignments + [shlex.join(argv)])


def run(commands, dry_run: bool, env=None) -> int:
  """Runs each argv in turn, stopping at the first failure; dry_run prints them instead.

  Printed lines are exactly what would run, one per line, for copy-paste or review.
  """
  for argv in commands:
    line = format_command(argv, env)
    if dry_run:
      print(line, flush=True)
      continue
    print(f"+ {line}", file=sys.stderr, flush=True)
    code = subprocess.call(list(argv), env={**os.environ, **env} if env else None)
    if code:
      print(f"command failed with exit status {code}: {line}", file=sys.stderr)
      return code
  return 0
