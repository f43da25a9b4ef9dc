"""The `symbol-tuning` command: one subcommand per job, each in symbol_tuning/commands/.

  symbol-tuning list [--json]                  tasks and mixtures, example counts, rates
  symbol-tuning inspect NAME [--num N] [--json] prompts as the seqio pipeline yields them
  symbol-tuning export NAME --num N --out F    the same records as JSONL
  symbol-tuning stats NAME [--num N]           k / template / symbol-kind spread, fitting
  symbol-tuning train --gin_file=F [--gin.X=Y]  finetune with the embedded trainer
  symbol-tuning convert SRC DST [--to FMT]     checkpoints: HF <-> t5x <-> ours
  symbol-tuning eval --checkpoint P --suite S  held-out ICL evaluation; compare A B
  symbol-tuning demo [--out DIR] [--init P]    evaluate, symbol-tune, evaluate, report
"""
import argparse
import importlib
import os
import sys

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Subcommand modules; each has register(subparsers) and its parsers set `func`.
COMMAND_MODULES = (
    "symbol_tuning.commands.data",
    "symbol_tuning.commands.train",
    "symbol_tuning.checkpoints.convert",
    "symbol_tuning.commands.evaluate",
    "symbol_tuning.commands.demo",
)


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


def _quiet_libraries() -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="symbol-tuning",
      description="Symbol tuning (Wei et al. 2023) for seq2seq LMs: data, training, eval.")
  parser.add_argument(
      "--vocab", default=None,
      help="flan_t5 (Flan-T5's sentencepiece on GCS; default), local (shipped 8k model, "
           "no network), a path to a .model file, or a HF tokenizer.json / model dir "
           "(decoder-only models); also $SYMBOL_TUNING_VOCAB")
  subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name in COMMAND_MODULES:
    importlib.import_module(name).register(subparsers)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra and not getattr(args, "accepts_gin_shorthand", False):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  args.extra = extra
  _quiet_libraries()
  if args.vocab:
    os.environ["SYMBOL_TUNING_VOCAB"] = args.vocab
  try:
    return args.func(args) or 0
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # `symbol-tuning inspect ... | head`
    return 0
  except Exception as e:  # pylint: disable=broad-except
    from symbol_tuning.sources.examples import DataSourceError  # pylint: disable=g-import-not-at-top

    if isinstance(e, (CliError, DataSourceError, ValueError, FileNotFoundError)) and not \
        os.environ.get("SYMBOL_TUNING_DEBUG"):
      print(f"symbol-tuning {args.command}: error: {e}", file=sys.stderr)
      return 2
    raise


if __name__ == "__main__":
  sys.exit(main())
