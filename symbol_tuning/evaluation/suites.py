"""What to evaluate: suites -> (task, setting) units -> prompts ready for scoring.

  paper            the 11 held-out HF datasets (SPEC 5): at most 100 validation queries
                   each (RAFT: its 50 labelled examples), k = 4 per class, a random template
                   per prompt; settings instr_labels, instr_symbols, labels, symbols (eval
                   symbol pool), and flipped on the six binary tasks. Prompts come from the
                   registered tasks' PromptSpecs (symbol_tuning.eval.<key>.<setting>).
  bigbench         the same protocol on the 11 held-out BIG-bench tasks (offline).
  list_functions   c001..c250 (or a subset), 4-shot, generative, exact match.
  turing_concepts  simp_turing_concept additional_set_2, concepts of <= 3 instructions,
                   the tasks' own shots, generative, exact match.

A prompt is a function of (task, setting, query position, seed) only: PromptBuilder folds
the task name, split and position into the seed, so two checkpoints evaluated with the same
seed see identical prompts, whatever else is evaluated alongside.
"""
import dataclasses
import random
from typing import Callable

import seqio

from symbol_tuning.data import catalogue, pipeline, prompts, tasks
from symbol_tuning.data import vocab as vocab_lib
from symbol_tuning.data import algorithmic
from symbol_tuning.data.sources.examples import DataSourceError, LocalCopyError, stable_seed

GENERATIVE = "generative"  # the one setting of the algorithmic suites
# suite -> (catalogue group, BIG-bench role, task family in symbol_tuning.data.tasks)
CLASSIFICATION = {"paper": ("eval", None, "eval"), "bigbench": ("bigbench", "heldout", "eval_bigbench")}
SUITES = ("paper", "bigbench", "list_functions", "turing_concepts")
CLASSIFICATION_SETTINGS = prompts.EVAL_SETTINGS
DECODE_MARGIN = 4  # greedy tokens allowed past the longest answer (longer ones cannot match)
BIGBENCH_HINT = "set BIGBENCH_DIR to a copy of BIG-bench's bigbench/benchmark_tasks"


@dataclasses.dataclass
class Item:
  """One prompt to score, and what is known about it."""

  task: str  # report row: catalogue key, list-functions subtask or Turing concept
  setting: str
  position: int  # query position within the task split
  inputs: str
  input_ids: list  # with EOS
  target: str  # the gold answer text
  options: list | None = None  # label string per class (classification)
  option_ids: list | None = None  # their ids, with EOS
  gold: int | None = None  # class of the query (rank classification's answer)
  max_decode_len: int = 8
  meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Unit:
  """One (task, setting) cell of the results table."""

  task: str
  name: str  # display name (the paper's: SUBJ, TEH, ...)
  setting: str
  source: str  # where its data comes from, for error lines
  hint: str  # how to point it at a local copy
  num_classes: int | None
  build: Callable[..., tuple[list[Item], int]]  # (seed, max_examples) -> (items, unfit)


def is_generative(suite: str) -> bool:
  return suite not in CLASSIFICATION


def default_settings(suite: str) -> tuple[str, ...]:
  return (GENERATIVE,) if is_generative(suite) else CLASSIFICATION_SETTINGS


def check_suite(suite: str, settings=None) -> tuple[str, ...]:
  if suite not in SUITES:
    raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
  settings = tuple(settings or default_settings(suite))
  bad = [s for s in settings if s not in default_settings(suite)]
  if bad:
    raise ValueError(f"suite {suite!r} has no setting(s) {bad}; it has "
                     f"{', '.join(default_settings(suite))}")
  return settings


def entries(suite: str) -> list[catalogue.DatasetEntry]:
  group, role, _ = CLASSIFICATION[suite]
  return [e for e in catalogue.load(group) if role is None or e.role == role]


def applies(entry: catalogue.DatasetEntry, setting: str) -> bool:
  return setting != "flipped" or entry.num_classes == 2


def chance_level(suite: str, setting: str) -> float:
  """Percent accuracy of guessing uniformly, averaged over the suite's tasks for this
  setting (from the catalogue's class counts; 0 for generative suites)."""
  if is_generative(suite):
    return 0.0
  chosen = [e for e in entries(suite) if applies(e, setting)]
  return 100.0 * sum(1.0 / e.num_classes for e in chosen) / max(len(chosen), 1)


def _source_and_hint(entry: catalogue.DatasetEntry) -> tuple[str, str]:
  if entry.source == "hf":
    origin = f"HuggingFace {entry.hf_id}" + (f"/{entry.hf_config}" if entry.hf_config else "")
    return origin, (f"point SYMBOL_TUNING_DATA_DIR at a local copy: "
                    f"$SYMBOL_TUNING_DATA_DIR/{entry.key}/<split>.jsonl (splits "
                    f"{entry.train_split!r} and {entry.query_split!r}) or a save_to_disk "
                    "directory; README, 'Data sources and local copies'")
  return f"BIG-bench {entry.path}", BIGBENCH_HINT


def query_positions(num_queries: int, max_examples: int | None, key: str,
                    seed: int) -> list[int]:
  """The query positions evaluated: all, or a random sample of `max_examples` fixed by
  (dataset, seed) and the same for every setting, in file order (a class-sorted file must
  not give one class only). query_positions(5, None, "subj", 0) -> [0, 1, 2, 3, 4]."""
  if max_examples is None or max_examples >= num_queries:
    return list(range(num_queries))
  rng = random.Random(stable_seed("eval_queries", key, seed))
  return sorted(rng.sample(range(num_queries), max_examples))


def _classification_items(task_name: str, key: str, setting: str, input_length: int,
                          seed: int, max_examples: int | None,
                          answer_in_sequence: bool = False):
  """`answer_in_sequence` (decoder-only): prompt + EOS + the longest option + EOS fit
  `input_length` (the model's whole sequence, as in training); else prompt + EOS fit it."""
  spec = seqio.get_mixture_or_task(task_name).source.spec
  builder = pipeline.builder(spec, "validation", input_length - 1)  # room for EOS
  eos = vocab_lib.resolve().eos_id
  items, unfit = [], 0
  for pos in query_positions(len(builder.queries), max_examples, key, seed):
    try:
      p = (builder.build_sequence(pos, seed, input_length, all_options=True)
           if answer_in_sequence else builder.build(pos, seed))
    except prompts.PromptError:
      unfit += 1  # cannot fit input_length even with one exemplar per class (as the pipeline)
      continue
    option_ids = [list(builder.pieces(o)) + [eos] for o in p.metadata["options"]]
    meta = {k: p.metadata[k] for k in ("template", "k", "query_index", "symbols", "exemplars",
                                        "instruction")}
    items.append(Item(key, setting, pos, p.inputs, list(p.input_ids) + [eos], p.targets,
                      list(p.metadata["options"]), option_ids, p.metadata["gold"],
                      max(map(len, option_ids)) + DECODE_MARGIN, meta))
  return items, unfit


def _generative_items(made: list, input_length: int, answer_in_sequence: bool = False):
  vocabulary = vocab_lib.resolve()
  items, unfit = [], 0
  for p in made:
    ids = list(vocabulary.encode(p.inputs)) + [vocabulary.eos_id]
    target_len = len(vocabulary.encode(p.target)) + 1
    if len(ids) + (target_len if answer_in_sequence else 0) > input_length:
      unfit += 1  # never cut: the query sits at the end
    items.append(Item(p.task, GENERATIVE, p.position, p.inputs, ids, p.target,
                      max_decode_len=target_len + DECODE_MARGIN, meta=dict(p.meta)))
  return items, unfit


def units(suite: str, settings=None, *, subset: str | None = None, tasks_filter=None,
          input_length: int = pipeline.DEFAULT_INPUT_LENGTH,
          max_instructions: int = algorithmic.MAX_INSTRUCTIONS,
          answer_in_sequence: bool = False) -> list[Unit]:
  """The suite's (task, setting) units. Nothing is read until a unit is built, except the
  Turing Concepts task file (to list its concepts).

  `tasks_filter`: keep only these task keys / subtasks / concepts (None: all).
  `answer_in_sequence` (the model family's, e.g. decoder-only): `input_length` bounds the
  whole sequence, prompt and answer together.
  """
  settings = check_suite(suite, settings)
  keep = (lambda name: True) if not tasks_filter else (lambda name: name in tasks_filter)
  out = []
  if suite in CLASSIFICATION:
    family = CLASSIFICATION[suite][2]
    for entry in entries(suite):
      if not keep(entry.task_key) and not keep(entry.key):
        continue
      source, hint = _source_and_hint(entry)
      for setting in settings:
        if not applies(entry, setting):
          continue
        name = tasks.task_name(family, entry, setting)
        build = (lambda seed, max_examples, _n=name, _k=entry.task_key, _s=setting:
                 _classification_items(_n, _k, _s, input_length, seed, max_examples,
                                       answer_in_sequence))
        out.append(Unit(entry.task_key, entry.name, setting, source, hint, entry.num_classes,
                        build))
  elif suite == "list_functions":
    for sub in algorithmic.parse_subset(subset):
      if keep(sub):
        build = (lambda seed, max_examples, _s=sub: _generative_items(
            algorithmic.list_function_prompts(_s, seed, max_examples), input_length,
            answer_in_sequence))
        out.append(Unit(sub, sub, GENERATIVE, f"BIG-bench list_functions/{sub}",
                        BIGBENCH_HINT, None, build))
  else:
    try:
      concepts = algorithmic.turing_concepts(max_instructions)
    except DataSourceError as e:
      # No data: one unit that fails with the reason when built (and is reported skipped).
      def fail(seed, max_examples, _e=e):
        raise _e
      return [Unit("turing_concepts", "turing_concepts", GENERATIVE,
                   f"BIG-bench {algorithmic.TURING_SET}", BIGBENCH_HINT, None,
                   fail)]
    for concept in concepts:
      if keep(concept):
        build = (lambda seed, max_examples, _c=concept: _generative_items(
            algorithmic.turing_concept_prompts(_c, max_examples, max_instructions),
            input_length, answer_in_sequence))
        out.append(Unit(concept, concept, GENERATIVE, f"BIG-bench {algorithmic.TURING_SET}",
                        BIGBENCH_HINT, None, build))
  return out


@dataclasses.dataclass
class Skipped:
  task: str
  settings: list
  source: str
  reason: str

  def line(self) -> str:
    return (f"skipped {self.task} ({', '.join(self.settings)}) [{self.source}]: "
            f"{self.reason}")


def build_all(unit_list: list[Unit], seed: int = 0, max_examples: int | None = None,
              on_skip: Callable[[Skipped], None] | None = None):
  """(items, skipped, unfit per (task, setting)). A task whose data is missing or too small
  is skipped with its reason (once for all its settings); the others go on."""
  items, skipped, unfit = [], {}, {}
  for unit in unit_list:
    if unit.task in skipped:
      skipped[unit.task].settings.append(unit.setting)
      continue
    try:
      built, n_unfit = unit.build(seed, max_examples)
    except (DataSourceError, OSError, ValueError) as e:
      reason = " ".join(str(e).split())
      if (not isinstance(e, LocalCopyError) and "SYMBOL_TUNING_DATA_DIR" not in reason
          and "BIGBENCH_DIR" not in reason):
        reason += f"; to use a local copy, {unit.hint}"
      skipped[unit.task] = Skipped(unit.task, [unit.setting], unit.source, reason)
      continue
    items += built
    if n_unfit:
      unfit[f"{unit.task}/{unit.setting}"] = n_unfit
  for s in skipped.values():
    if on_skip:
      on_skip(s)
  return items, list(skipped.values()), unfit
