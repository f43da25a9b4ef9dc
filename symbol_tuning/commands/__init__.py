"""Subcommands of the `symbol-tuning` CLI (symbol_tuning/cli.py builds the parser from
them), and what they share: the one-line user error and argument types."""
import argparse


class CliError(Exception):
  """A user error: printed as one line, exit status 2."""


def positive_int(text: str) -> int:
  """argparse type for counts that must be at least 1 (steps, examples, batch sizes)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"{value} must be at least 1")
  return value
