"""The `symbol-tuning` command: one subcommand per job, each in symbol_tuning/commands/.

  symbol-tuning list [--json]                  tasks and mixtures, example counts, rates
  symbol-tuning inspect NAME [--num N] [--json] prompts as the seqio pipeline yields them
  symbol-tuning export NAME --num N --out F    the same records as JSONL
  symbol-tuning stats NAME [--num N]           k / template / symbol-kind spread, fitting
  symbol-tuning train --gin_file=F [--gin.X=Y]  finetune with the embedded trainer
  symbol-tuning convert SRC DST [--to FMT]     checkpoints: HF <-> t5x <-> ours
  symbol-tuning eval --checkpoint P --suite S  held-out ICL evaluation; compare A B
  symbol-tuning demo [--out DIR] [--init P]    evaluate, symbol-tune, evaluate, report

Global options (--vocab, --source, --tfds_data_dir) go before or after the command. A wrong
option or command is one line naming the closest valid one.
"""
import argparse
import difflib
import importlib
import sys

from symbol_tuning import settings
from symbol_tuning.commands import CliError

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the terminal.
settings.quiet_native_logging()

# Subcommand modules; each has register(subparsers) and its parsers set `func`.
COMMAND_MODULES = (
    "symbol_tuning.commands.data",
    "symbol_tuning.commands.train",
    "symbol_tuning.checkpoints.convert",
    "symbol_tuning.commands.evaluate",
    "symbol_tuning.commands.demo",
)


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (no usage block) that suggest the closest command. It
  keeps its own record of its options and subcommands (argparse lists them only in private
  attributes), for the typo check below."""

  def __init__(self, *args, **kwargs):
    self.long_options: set[str] = set()  # set first: argparse's __init__ adds --help
    self.subcommands: dict[str, "Parser"] = {}
    super().__init__(*args, **kwargs)

  def add_argument(self, *names, **kwargs):
    self.long_options.update(n for n in names if n.startswith("--"))
    return super().add_argument(*names, **kwargs)

  def add_subparsers(self, **kwargs):
    group = super().add_subparsers(**kwargs)
    add_parser = group.add_parser

    def add_and_record(name, **parser_kwargs):
      self.subcommands[name] = add_parser(name, **parser_kwargs)
      for alias in parser_kwargs.get("aliases", ()):
        self.subcommands[alias] = self.subcommands[name]
      return self.subcommands[name]

    group.add_parser = add_and_record
    return group

  def error(self, message):
    if "invalid choice:" in message and " (choose from " in message:
      # argparse: "argument X: invalid choice: 'foo' (choose from 'a', 'b')", for a command
      # or an option: the choices are the ones that argument takes.
      head, listed = message.split(" (choose from ", 1)
      wrong = head.split("invalid choice:", 1)[1].strip(" '")
      choices = [c.strip(" '") for c in listed.rstrip(")").split(",")]
      close = difflib.get_close_matches(wrong, choices, n=1)
      message = head + (f"; did you mean {close[0]!r}?" if close else f"; choose from {choices}")
    self.exit(2, f"{self.prog}: error: {message}\n")


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
  """The options read before the command; subcommands get them too (default SUPPRESS, so a
  subcommand that does not see one keeps what the main parser read)."""
  parser.add_argument(
      "--vocab", default=default,
      help="flan_t5 (Flan-T5's sentencepiece on GCS; default), local (shipped 8k model, "
           "no network), a path to a .model file, or a HF tokenizer.json / model dir "
           "(decoder-only models); also $SYMBOL_TUNING_VOCAB")
  parser.add_argument(
      "--source", default=default, choices=["hf", "tfds"],
      help="hf (default): the HuggingFace hub or SYMBOL_TUNING_DATA_DIR; tfds: the datasets "
           "TensorFlow Datasets has, from --tfds_data_dir (also $SYMBOL_TUNING_DATA_SOURCE)")
  parser.add_argument(
      "--tfds_data_dir", default=default,
      help="prepared TFDS datasets, a folder or gs:// (also $TFDS_DATA_DIR; default: TFDS's)")


def _quiet_libraries() -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
  parser = Parser(
      prog="symbol-tuning",
      description="Symbol tuning (Wei et al. 2023) for seq2seq LMs: data, training, eval.")
  _add_global_options(parser, None)
  subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name in COMMAND_MODULES:
    importlib.import_module(name).register(subparsers)
  for subparser in set(subparsers.choices.values()):
    _add_global_options(subparser, argparse.SUPPRESS)
  return parser


def _unknown_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
  """The first `--option` that neither the main parser nor the command's takes, as one
  line with the closest valid one; checked before argparse, whose complaint about missing
  required options would otherwise hide the typo that caused it."""
  command = next((a for a in argv if a in parser.subcommands), None)
  valid = set(parser.long_options)
  if command is not None:
    valid |= parser.subcommands[command].long_options
  valid = sorted(valid)
  for arg in argv[:argv.index("--")] if "--" in argv else argv:
    name = arg.split("=", 1)[0]
    if not arg.startswith("--") or name.startswith("--gin.") and command == "train":
      continue
    if not any(v.startswith(name) for v in valid):  # argparse takes unique prefixes too
      close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
      return (f"unrecognized option {name!r}" +
              (f"; did you mean {close[0]}?" if close else f"; valid options: {valid}"))
  return None


def main(argv=None) -> int:
  parser = build_parser()
  argv = sys.argv[1:] if argv is None else list(argv)
  problem = _unknown_option(parser, argv)
  if problem:
    command = next((a for a in argv if a in parser.subcommands), None)
    print(f"symbol-tuning{' ' + command if command else ''}: error: {problem}", file=sys.stderr)
    return 2
  args, extra = parser.parse_known_args(argv)
  gin_shorthand = getattr(args, "accepts_gin_shorthand", False)
  unknown = [a for a in extra if not (gin_shorthand and a.startswith("--gin."))]
  if unknown:
    print(f"symbol-tuning {args.command}: error: unrecognized arguments: {' '.join(unknown)}",
          file=sys.stderr)
    return 2
  args.extra = extra
  _quiet_libraries()
  if args.vocab:
    from symbol_tuning.data import vocab  # pylint: disable=g-import-not-at-top

    vocab.set_vocabulary(args.vocab)
  if args.source or args.tfds_data_dir:
    from symbol_tuning.data import pipeline, sources  # pylint: disable=g-import-not-at-top

    if sources.select(args.source, args.tfds_data_dir):
      pipeline.clear_caches()  # prompt builders of an earlier main() in this process
  try:
    return args.func(args) or 0
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # `symbol-tuning inspect ... | head`
    return 0
  except Exception as e:  # pylint: disable=broad-except
    from symbol_tuning.data.sources.examples import DataSourceError  # pylint: disable=g-import-not-at-top

    if isinstance(e, (CliError, DataSourceError, ValueError, FileNotFoundError)) and not \
        settings.debug():
      print(f"symbol-tuning {args.command}: error: {e}", file=sys.stderr)
      return 2
    raise


if __name__ == "__main__":
  sys.exit(main())
