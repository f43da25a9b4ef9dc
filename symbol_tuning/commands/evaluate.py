"""`symbol-tuning eval` and `symbol-tuning compare`: held-out in-context learning.

  symbol-tuning eval --checkpoint PATH|random:CONFIG[:SEED] --suite SUITE [--settings a,b]
      [--out DIR] [--max_examples N] [--seed S] [--batch_size B] [--subset c001-c020]
  symbol-tuning compare RUN_A RUN_B [--out DIR] [--names before,after]

Suites: paper | bigbench | list_functions | turing_concepts (symbol_tuning/evaluation/
suites.py). PATH is a HuggingFace dir, a t5x checkpoint, a native dir or the embedded
trainer's MODEL_DIR. A task whose data is missing is skipped with one error line saying
why and how to point it at a local copy; the others are evaluated, and the report lists it.
"""
import argparse
import sys
import time

from symbol_tuning import paths
from symbol_tuning.commands import CliError, positive_int

SUITES = ("paper", "bigbench", "list_functions", "turing_concepts")


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "eval", help="evaluate in-context learning on held-out tasks (rank classification, "
                   "exact match)", description=__doc__.split("\n\n", 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="HF dir, t5x checkpoint, native dir, trainer MODEL_DIR, or "
                      "random:CONFIG[:SEED] (random weights, e.g. random:tiny)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (t5x / MODEL_DIR)")
  p.add_argument("--suite", required=True, choices=SUITES)
  p.add_argument("--settings", default=None,
                 help="comma-separated; default: instr_labels,instr_symbols,labels,symbols,"
                      "flipped (classification suites)")
  p.add_argument("--tasks", default=None, help="comma-separated task keys to keep")
  p.add_argument("--subset", default=None,
                 help="list_functions: all (default), first20, c001,c007, c001-c020 or @FILE")
  p.add_argument("--max_instructions", type=positive_int, default=3,
                 help="turing_concepts: largest concept size kept (default 3)")
  p.add_argument("--max_examples", type=positive_int, default=None,
                 help="a random sample of N queries per task, fixed by --seed and the same "
                      "for every setting (default: all; paper: <= 100 each)")
  p.add_argument("--seed", type=int, default=0, help="fixes every prompt (default 0)")
  p.add_argument("--batch_size", type=positive_int, default=8, help="prompts per encoder batch")
  p.add_argument("--input_length", type=positive_int, default=2048,
                 help="input token budget prompts are fitted to (default 2048); decoder-only "
                      "models: prompt + answer together")
  p.add_argument("--no_greedy", action="store_true",
                 help="classification suites: rank classification only, no decoding")
  p.add_argument("--ignore_case", action="store_true",
                 help="exact match ignores case (default: case-sensitive)")
  p.add_argument("--out", default=None, help="output directory (default eval_<suite>)")
  p.add_argument("--label", default=None, help="name of this run in reports")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run_eval)

  c = subparsers.add_parser("compare", help="compare two eval runs: table, deltas, plots")
  c.add_argument("run_a", help="run directory (or results.json) before")
  c.add_argument("run_b", help="run directory (or results.json) after")
  c.add_argument("--out", default=None, help="output directory (default RUN_B/compare)")
  c.add_argument("--names", default=None, help="two labels, e.g. before,after")
  c.set_defaults(func=run_compare)


def _split(text):
  return [t.strip() for t in text.split(",") if t.strip()] if text else None


class _Progress:
  """A rich progress bar (or nothing), advanced by the scorer per batch."""

  def __init__(self, total: int, label: str, enabled: bool):
    self.bar = None
    if enabled and total:
      from rich import console, progress  # pylint: disable=g-import-not-at-top

      self.bar = progress.Progress(
          progress.TextColumn("{task.description}"), progress.BarColumn(),
          progress.MofNCompleteColumn(), progress.TextColumn("prompts"),
          progress.TimeElapsedColumn(), progress.TimeRemainingColumn(),
          console=console.Console(stderr=True))
      self.task = self.bar.add_task(label, total=total)

  def __enter__(self):
    if self.bar:
      self.bar.start()
    return self

  def __exit__(self, *exc):
    if self.bar:
      self.bar.stop()

  def __call__(self, n: int) -> None:
    if self.bar:
      self.bar.advance(self.task, n)


def run_suite(model, suite: str, *, settings=None, tasks_filter=None, subset=None,
              max_examples=None, seed=0, batch_size=8, input_length=2048, greedy=True,
              ignore_case=False, max_instructions=3, progress=False, label=None,
              on_skip=None):
  """Evaluates `model` (scoring.Model) on a suite; returns (records, results)."""
  from symbol_tuning.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from symbol_tuning.evaluation import report, scoring, suites  # pylint: disable=g-import-not-at-top
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top

  settings = suites.check_suite(suite, settings)
  vocabulary = vocab_lib.resolve()  # fails fast (e.g. GCS unreachable) before any data work
  unit_list = suites.units(suite, settings, subset=subset, tasks_filter=tasks_filter,
                           input_length=input_length, max_instructions=max_instructions,
                           answer_in_sequence=registry.family_of(model.config).answer_in_sequence)
  items, skipped, unfit = suites.build_all(unit_list, seed, max_examples, on_skip)
  generative = suites.is_generative(suite)
  requests = [scoring.Request(it.input_ids, it.option_ids,
                              it.max_decode_len if (greedy or generative) else None)
              for it in items]
  scorer = scoring.Scorer(model, batch_size=batch_size, eos_id=vocabulary.eos_id,
                          vocab_limit=vocabulary.vocab_size)
  start = time.perf_counter()
  with _Progress(len(requests), f"{suite} ({len(unit_list)} task settings)", progress) as bar:
    outputs = scorer.run(requests, progress=bar) if requests else []
  seconds = time.perf_counter() - start
  records = []
  for it, out in zip(items, outputs):
    text = None if out.tokens is None else vocabulary.decode(out.tokens.tolist())
    records.append(report.example_record(it, out.scores, text, ignore_case))
  names = {u.task: u.name for u in unit_list}
  meta = {"label": label or model.description, "checkpoint": model.description, "seed": seed,
          "max_examples": max_examples, "input_length": input_length,
          "vocabulary": vocab_lib.current_spec(), "exact_match_ignore_case": ignore_case,
          "seconds": round(seconds, 2)}
  if suite == "list_functions":
    meta["subset"] = subset or "all"
  if suite == "turing_concepts":
    meta["max_instructions"] = max_instructions
  results = report.summarize(
      records, suite=suite, settings=settings, names=names,
      chance={s: suites.chance_level(suite, s) for s in settings}, skipped=skipped,
      unfit=unfit, meta=meta)
  return records, results


def run_eval(args) -> int:
  from symbol_tuning.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from symbol_tuning.evaluation import report, scoring  # pylint: disable=g-import-not-at-top

  vocabulary = vocab_lib.resolve()
  try:
    model = scoring.load_model(args.checkpoint, vocab_size=vocabulary.vocab_size, step=args.step)
  except (FileNotFoundError, ValueError) as e:
    raise CliError(str(e)) from None
  records, results = run_suite(
      model, args.suite, settings=_split(args.settings), tasks_filter=_split(args.tasks),
      subset=args.subset, max_examples=args.max_examples, seed=args.seed,
      batch_size=args.batch_size, input_length=args.input_length, greedy=not args.no_greedy,
      ignore_case=args.ignore_case, max_instructions=args.max_instructions,
      progress=not args.no_progress, label=args.label,
      on_skip=lambda s: print(f"symbol-tuning eval: {s.line()}", file=sys.stderr))
  written = report.write_run(args.out or f"eval_{args.suite}", records, results)
  print(report.run_markdown(results))
  print(f"wrote {', '.join(str(p) for p in written)} ({results['num_examples']} prompts in "
        f"{results['seconds']:.1f} s; {len(results['skipped'])} tasks skipped)", file=sys.stderr)
  if not records:
    why = (f"no prompt fits --input_length {args.input_length} even with one exemplar per "
           f"class; raise it" if results["unfit_prompts"] else "every task was skipped")
    print(f"symbol-tuning eval: nothing was evaluated ({why})", file=sys.stderr)
    return 1
  return 0


def run_compare(args) -> int:
  from symbol_tuning.evaluation import report  # pylint: disable=g-import-not-at-top

  a, b = report.load_results(args.run_a), report.load_results(args.run_b)
  names = _split(args.names) or ["A", "B"]
  if len(names) != 2:
    raise CliError("--names takes two comma-separated labels, e.g. before,after")
  cmp = report.compare(a, b, names)
  run_b = paths.path(args.run_b)
  out = args.out or (run_b if run_b.is_dir() else run_b.parent) / "compare"
  written = report.write_compare(out, cmp)
  print(report.compare_markdown(cmp))
  print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
  return 0
