"""Registers every seqio task and mixture: `import symbol_tuning.data.tasks`.

Registration reads only the catalogue (tasks/*.json); no data is touched until a dataset
is requested. Task names:
  symbol_tuning.tune.<key>                 the 22 tuning datasets, symbol prompts
  symbol_tuning.instruct.<key>             the same, natural labels + instruction (Flan stand-in)
  symbol_tuning.bigbench.<task>            BIG-bench tuning tasks, symbol prompts
  symbol_tuning.bigbench_instruct.<task>   BIG-bench tuning tasks, natural labels + instruction
  symbol_tuning.eval.<key>.<setting>       the 11 held-out datasets, per evaluation setting
  symbol_tuning.eval_bigbench.<task>.<setting>   BIG-bench held-out tasks, per setting
Mixtures: see MIXTURES below, plus symbol_tuning_mix(fraction, other).
"""
import functools

import gin
import seqio

from symbol_tuning.data import catalogue, metrics, pipeline, prompts
from symbol_tuning.data import vocab as vocab_lib
from symbol_tuning.data import algorithmic

PREFIX = "symbol_tuning"
EXAMPLES_CAP = 25_000  # the paper's examples-proportional cap

# The task families: (catalogue group, BIG-bench role or None, name part, setting name,
# ((task split, dataset split), ...)).
FAMILIES = (
    ("tune", None, "tune", "tune", (("train", "train"),)),
    ("tune", None, "instruct", "instruct", (("train", "train"),)),
    ("bigbench", "tune", "bigbench", "tune", (("train", "train"), ("validation", "validation"))),
    ("bigbench", "tune", "bigbench_instruct", "instruct",
     (("train", "train"), ("validation", "validation"))),
)
# Evaluation families: one task per dataset and setting, queries in the "validation" split.
EVAL_FAMILIES = (
    ("eval", None, "eval"),
    ("bigbench", "heldout", "eval_bigbench"),
)

# Mixtures as data: name -> (task family, rate). Rates are examples-proportional, capped.
MIXTURES = {
    "symbol_tuning": "tune",
    "instruction_tuning": "instruct",
    "symbol_tuning_bigbench": "bigbench",
    "instruction_tuning_bigbench": "bigbench_instruct",
}
# Pre-registered symbol / instruction mixes: (symbol mixture, other mixture, name stem).
PRESET_MIXES = (
    ("symbol_tuning", "instruction_tuning", "symbol_tuning_mix"),
    ("symbol_tuning_bigbench", "instruction_tuning_bigbench", "symbol_tuning_bigbench_mix"),
)
PRESET_FRACTIONS = (0.16, 0.33, 0.5, 0.67, 0.84)

METADATA_FEATURES = ("template", "k", "num_dropped", "gold", "k_drawn", "labels_json", "query",
                     "query_index")


def output_features():
  vocabulary = vocab_lib.LazyVocabulary()
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=True),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def task_name(family: str, entry: catalogue.DatasetEntry, setting: str | None = None) -> str:
  name = f"{PREFIX}.{family}.{entry.task_key}"
  return f"{name}.{setting}" if setting else name


def _entries(group: str, role: str | None):
  return [e for e in catalogue.load(group) if role is None or e.role == role]


def _register_task(name: str, entry, setting: prompts.Setting, query_splits,
                   metric_fns=()) -> None:
  spec = pipeline.PromptSpec(name, entry, setting, tuple(query_splits))
  seqio.TaskRegistry.add(
      name,
      task_cls=pipeline.PromptTask,  # build_prompts trims: no seqio trim map
      source=pipeline.QuerySource(spec),
      # build_prompts ends inputs and targets with EOS, as append_eos_after_trim would.
      preprocessors=[functools.partial(pipeline.build_prompts, spec=spec, append_eos=True)],
      output_features=output_features(),
      # Eval tasks: exact match of decoded predictions (their rank-classification twins
      # are registered by evaluation.algorithmic); tuning tasks have no metrics.
      postprocess_fn=metrics.postprocess if metric_fns else None,
      metric_fns=list(metric_fns),
      shuffle_buffer_size=None,  # QuerySource shuffles (performs_internal_shuffling)
  )


def register_all() -> None:
  for group, role, family, setting_name, splits in FAMILIES:
    for entry in _entries(group, role):
      _register_task(task_name(family, entry), entry, prompts.SETTINGS[setting_name],
                            splits)
  for group, role, family in EVAL_FAMILIES:
    for entry in _entries(group, role):
      for setting_name in prompts.EVAL_SETTINGS:
        if setting_name == "flipped" and entry.num_classes != 2:
          continue
        _register_task(task_name(family, entry, setting_name), entry,
                       prompts.SETTINGS[setting_name], (("validation", entry.query_split),),
                       metric_fns=[metrics.exact_match])
  rate = functools.partial(seqio.mixing_rate_num_examples, maximum=EXAMPLES_CAP)
  for mixture, family in MIXTURES.items():
    tasks = [n for n in seqio.TaskRegistry.names() if n.startswith(f"{PREFIX}.{family}.")]
    seqio.MixtureRegistry.add(mixture, sorted(tasks), default_rate=rate,
                              mixture_cls=pipeline.PromptMixture)
  for group, role, family in EVAL_FAMILIES:
    for setting_name in prompts.EVAL_SETTINGS:
      tasks = sorted(n for n in seqio.TaskRegistry.names()
                     if n.startswith(f"{PREFIX}.{family}.") and n.endswith(f".{setting_name}"))
      seqio.MixtureRegistry.add(f"{PREFIX}_{family}_{setting_name}", tasks, default_rate=1.0,
                                mixture_cls=pipeline.PromptMixture)
  for symbol_mixture, other, stem in PRESET_MIXES:
    for fraction in PRESET_FRACTIONS:
      symbol_tuning_mix(fraction, other, symbol_mixture=symbol_mixture,
                        name=f"{stem}_{round(fraction * 100)}pct")
  algorithmic.register_tasks(output_features)  # List Functions, Turing Concepts, rank twins


@gin.configurable
def symbol_tuning_mix(fraction: float = gin.REQUIRED, other: str = "instruction_tuning", *,
                      symbol_mixture: str = "symbol_tuning", name: str | None = None) -> str:
  """Registers (once) and returns a mixture: `fraction` symbol data, the rest `other`.

  `other` is any registered task or mixture (the Flan collection when the user has it).
  From gin: MIXTURE_OR_TASK_NAME = @symbol_tuning_mix()  with
  symbol_tuning_mix.fraction = 0.16  and  symbol_tuning_mix.other = 'flan2022_submix'.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"symbol_tuning_mix: fraction must be in (0, 1], got {fraction}")
  for part in (symbol_mixture, other):
    if part not in seqio.MixtureRegistry.names() and part not in seqio.TaskRegistry.names():
      raise ValueError(f"symbol_tuning_mix: no task or mixture named {part!r}")
  name = name or f"{symbol_mixture}_{round(fraction * 100)}pct_{other}"
  if name not in seqio.MixtureRegistry.names():
    parts = [(symbol_mixture, fraction)] + ([(other, 1.0 - fraction)] if fraction < 1 else [])
    seqio.MixtureRegistry.add(name, parts, mixture_cls=pipeline.PromptMixture)
  return name


register_all()
