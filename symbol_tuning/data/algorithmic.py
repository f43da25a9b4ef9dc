"""List Functions and Simple Turing Concepts prompts, and the evaluation-only seqio tasks.

List Functions (BIG-bench list_functions/c001..c250, 32 examples each): every example is
a query once; its 4 shots are drawn from the subtask's other 31 examples by a seed folded
with (subtask, position), so a prompt depends on nothing but the seed. (choice) The format
is template 1, `Input: {x}\nOutput: {y}`, exemplars separated by a blank line, no
instruction (`instruction=True` prepends the task's task_prefix):

    Input: [3, 4, 1, 5, 2, 0, 8, 6, 9]
    Output: [1]

    ... three more shots ...

    Input: [6, 3, 1, 4, 9, 0, 7]
    Output:                                 target: "[1]"

Simple Turing Concepts (simp_turing_concept/additional_set_2): every example's `input`
already holds the concept's own shots and ends with "Output:"; its `comment` is
"['<program>', <instructions>, <shots>]", e.g. "['+o', 2, 6]" (program "+o", 2
instructions). The suite keeps concepts of at most 3 instructions (17 concepts, 85
queries in bigbench 1.0.0); the prompt is the input as is, the target e.g. "'10'".

Both are generative and scored by exact match (symbol_tuning.data.metrics.normalize).

seqio (register_tasks, called once at the end of symbol_tuning.data.tasks.register_all; it
reads no data): symbol_tuning.list_functions.<cNNN> and symbol_tuning.turing_concepts
(split 'validation', prompts at seed 0, predict metric exact_match), mixtures
symbol_tuning_list_functions and symbol_tuning_turing_concepts; and a rank-classification
twin of every eval task, symbol_tuning.eval_rank.<key>.<setting> /
symbol_tuning.eval_bigbench_rank.<task>.<setting> (mixtures symbol_tuning_eval_rank_<setting>,
symbol_tuning_eval_bigbench_rank_<setting>): the same prompts, one example per label option,
scored by t5x (log-likelihood) and reduced by metrics.rank_classification.
"""
import ast
import dataclasses
import functools
import json
import random

import numpy as np
import seqio
import tensorflow as tf

from symbol_tuning import paths
from symbol_tuning.data import metrics, pipeline, prompts
from symbol_tuning.data import vocab as vocab_lib
from symbol_tuning.data.sources import bigbench
from symbol_tuning.data.sources.examples import DataSourceError, stable_seed

LIST_FUNCTIONS = tuple(f"c{i:03d}" for i in range(1, 251))
# Named subsets. The paper used 20 subtasks "with the highest human accuracy in five
# categories" without listing them; `all` is the default, and any list can be given.
SUBSETS = {"all": LIST_FUNCTIONS, "first20": LIST_FUNCTIONS[:20]}
LIST_FUNCTIONS_SHOTS = 4
TURING_SET = "simp_turing_concept/additional_set_2"
MAX_INSTRUCTIONS = 3
TEMPLATE = prompts.TEMPLATES[0]  # "Input: {x}\nOutput: {y}"
SPLIT = "validation"
LIST_FUNCTIONS_MIXTURE = "symbol_tuning_list_functions"
TURING_MIXTURE = "symbol_tuning_turing_concepts"
TURING_TASK = "symbol_tuning.turing_concepts"
RANK_FAMILIES = {"eval": "eval_rank", "eval_bigbench": "eval_bigbench_rank"}


@dataclasses.dataclass(frozen=True)
class GenerativePrompt:
  task: str  # list-functions subtask (c001) or Turing concept program (+o)
  position: int  # query position within the task
  inputs: str
  target: str
  meta: dict


def parse_subset(text: str | None) -> tuple[str, ...]:
  """List Functions subtasks from a name in SUBSETS, 'c001,c007', ranges 'c001-c020', or
  '@FILE' (ids separated by whitespace or commas); order kept, duplicates dropped."""
  if not text:
    return LIST_FUNCTIONS
  if text.startswith("@"):
    text = paths.path(text[1:]).read_text(encoding="utf-8").replace("\n", ",")  # or gs://
  chosen = []
  for part in (p.strip() for p in text.replace(" ", ",").split(",")):
    if not part:
      continue
    if part in SUBSETS:
      chosen += SUBSETS[part]
    elif "-" in part:
      lo, hi = part.split("-", 1)
      if lo not in LIST_FUNCTIONS or hi not in LIST_FUNCTIONS:
        raise ValueError(f"list_functions subset: bad range {part!r} (e.g. c001-c020)")
      chosen += LIST_FUNCTIONS[LIST_FUNCTIONS.index(lo):LIST_FUNCTIONS.index(hi) + 1]
    elif part in LIST_FUNCTIONS:
      chosen.append(part)
    else:
      raise ValueError(f"list_functions subset: unknown subtask or subset {part!r}; named "
                       f"subsets: {sorted(SUBSETS)}; subtasks c001..c250")
  return tuple(dict.fromkeys(chosen))


def _examples(task_path: str) -> list[dict]:
  task = bigbench.read_task(task_path)
  examples = task.get("examples") or []
  for i, ex in enumerate(examples):
    if "input" not in ex or "target" not in ex:
      raise DataSourceError(f"BIG-bench task {task_path!r} ({task['_origin']}), example {i}: "
                            "missing field 'input' or 'target'")
  return examples


def _target(ex: dict) -> str:
  target = ex["target"]
  return target[0] if isinstance(target, list) else str(target)


def list_function_prompts(subtask: str, seed: int = 0, max_examples: int | None = None,
                          instruction: bool = False) -> list[GenerativePrompt]:
  """4-shot prompts of one subtask, one per example (the first `max_examples`)."""
  path = f"list_functions/{subtask}"
  examples = _examples(path)
  if len(examples) <= LIST_FUNCTIONS_SHOTS:
    raise DataSourceError(f"BIG-bench task {path!r} has {len(examples)} examples; a "
                          f"{LIST_FUNCTIONS_SHOTS}-shot prompt needs more")
  header = ""
  if instruction:
    prefix = (bigbench.read_task(path).get("task_prefix") or "").strip()
    header = prefix + prompts.EXEMPLAR_SEPARATOR if prefix else ""
  out = []
  for pos in range(min(len(examples), max_examples or len(examples))):
    rng = random.Random(stable_seed("list_functions", subtask, pos, seed))
    shots = rng.sample([j for j in range(len(examples)) if j != pos], LIST_FUNCTIONS_SHOTS)
    body = [prompts.render(TEMPLATE, examples[j]["input"], _target(examples[j])) for j in shots]
    body.append(prompts.render_query(TEMPLATE, examples[pos]["input"]))
    out.append(GenerativePrompt(subtask, pos, header + prompts.EXEMPLAR_SEPARATOR.join(body),
                                _target(examples[pos]), {"shot_indices": shots, "query_index": pos,
                                 "shots": LIST_FUNCTIONS_SHOTS}))
  return out


def concept_of(example: dict, where: str = TURING_SET) -> tuple[str, int, int]:
  """(program, number of instructions, number of shots) from an example's comment."""
  try:
    program, instructions, shots = ast.literal_eval(example["comment"])
    return str(program), int(instructions), int(shots)
  except (KeyError, ValueError, SyntaxError, TypeError):
    raise DataSourceError(f"BIG-bench task {where!r}: comment {example.get('comment')!r} is "
                          "not \"['<program>', <instructions>, <shots>]\"") from None


@functools.cache
def turing_concepts(max_instructions: int = MAX_INSTRUCTIONS) -> dict[str, tuple[int, ...]]:
  """Concept program -> positions (in task.json) of its examples, in file order."""
  concepts: dict[str, list[int]] = {}
  for i, ex in enumerate(_examples(TURING_SET)):
    program, instructions, _ = concept_of(ex)
    if instructions <= max_instructions:
      concepts.setdefault(program, []).append(i)
  return {k: tuple(v) for k, v in concepts.items()}


def turing_concept_prompts(concept: str, max_examples: int | None = None,
                           max_instructions: int = MAX_INSTRUCTIONS) -> list[GenerativePrompt]:
  examples = _examples(TURING_SET)
  positions = turing_concepts(max_instructions).get(concept)
  if positions is None:
    raise DataSourceError(f"{TURING_SET}: no concept {concept!r} with at most "
                          f"{max_instructions} instructions")
  out = []
  for pos, index in enumerate(positions[:max_examples or len(positions)]):
    ex = examples[index]
    _, instructions, shots = concept_of(ex)
    out.append(GenerativePrompt(concept, pos, ex["input"].strip(), _target(ex),
                                {"query_index": index, "instructions": instructions,
                                 "shots": shots}))
  return out


# -----------------------------------------------------------------------------------------
# seqio registration.
# -----------------------------------------------------------------------------------------
@functools.cache
def _records(kind: str, name: str) -> list[dict]:
  if kind == "list_functions":
    made = list_function_prompts(name)
  else:
    made = [p for concept in turing_concepts() for p in turing_concept_prompts(concept)]
  # The data commands' passthrough fields, so `symbol-tuning inspect` shows these tasks too.
  return [{"inputs": p.inputs, "targets": p.target, "query": p.meta["query_index"],
           "task": f"{kind}/{p.task}", "template": 1, "k": p.meta["shots"],
           "k_drawn": p.meta["shots"], "num_dropped": 0, "gold": -1,
           "labels_json": json.dumps({"symbols": {}, "options": []})} for p in made]


class GenerativeSource(seqio.DataSource):
  """Prompts of one algorithmic task; built on first read, never at registration."""

  def __init__(self, kind: str, name: str):
    self.kind, self.name = kind, name
    super().__init__(splits=[SPLIT], num_input_examples=None, caching_permitted=False)

  @property
  def spec(self):
    # `symbol-tuning list` reads catalogue details from a task's source.spec; these tasks
    # have no catalogue entry, which it reports instead of failing.
    raise DataSourceError(f"{self.kind}/{self.name}: a generative BIG-bench task without a "
                          "catalogue entry (prompts: symbol_tuning.data.algorithmic)")

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  @property
  def performs_internal_shuffling(self) -> bool:
    return True  # get_dataset shuffles; the tasks disallow seqio's shuffle buffer

  def num_input_examples(self, split: str) -> int:
    return len(_records(self.kind, self.name))

  def list_shards(self, split: str):
    return [split]

  def get_dataset(self, split: str = SPLIT, shuffle: bool = True, seed=None, shard_info=None,
                  *, sequence_length=None, use_cached=False, num_epochs=1):
    del sequence_length, use_cached
    rows = _records(self.kind, self.name)
    ds = tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      ds = ds.shuffle(len(rows), seed=seed)
    return ds.repeat(num_epochs) if num_epochs != 1 else ds


def expand_options(dataset):
  """Preprocessor of the rank twins: one example per label option of each prompt, with
  `option` (its index) and `targets` (its ids; EOS comes later); `gold` and `query` kept."""
  pieces = {}

  def options(labels_json):
    spec = vocab_lib.current_spec()
    if spec not in pieces:
      pieces[spec] = vocab_lib.PieceEncoder()
    texts = json.loads(labels_json)["options"]
    ids = [list(pieces[spec](t)) for t in texts]
    width = max(len(i) for i in ids)
    table = np.zeros((len(ids), width), np.int32)
    for row, i in enumerate(ids):
      table[row, :len(i)] = i
    return table, np.array([len(i) for i in ids], np.int32), np.array(
        [t.encode() for t in texts], object)

  def explode(ex):
    table, lengths, texts = tf.numpy_function(
        options, [ex["labels_json"]], [tf.int32, tf.int32, tf.string], stateful=False)
    table.set_shape([None, None])
    lengths.set_shape([None])
    texts.set_shape([None])

    def one(i):
      i = tf.cast(i, tf.int32)
      out = dict(ex)
      out["targets"] = table[i, :lengths[i]]
      out["targets_pretokenized"] = texts[i]
      out["option"] = i
      return out

    return tf.data.Dataset.range(tf.cast(tf.shape(lengths)[0], tf.int64)).map(one)

  return dataset.flat_map(explode)


def _rank_twin_name(name: str) -> str | None:
  parts = name.split(".")
  if len(parts) == 4 and parts[0] == "symbol_tuning" and parts[1] in RANK_FAMILIES:
    return ".".join([parts[0], RANK_FAMILIES[parts[1]]] + parts[2:])
  return None


def register_tasks(output_features) -> None:
  """Registers the algorithmic tasks and the rank twins (idempotent; reads no data)."""
  registered = set(seqio.TaskRegistry.names())
  common = dict(output_features=output_features(), postprocess_fn=metrics.postprocess,
                shuffle_buffer_size=None)
  generative = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
  names = []
  for sub in LIST_FUNCTIONS:
    names.append(f"symbol_tuning.list_functions.{sub}")
    if names[-1] not in registered:
      seqio.TaskRegistry.add(names[-1], source=GenerativeSource("list_functions", sub),
                             preprocessors=generative, metric_fns=[metrics.exact_match],
                             **common)
  if TURING_TASK not in registered:
    seqio.TaskRegistry.add(TURING_TASK, source=GenerativeSource("turing_concepts", "all"),
                           preprocessors=generative, metric_fns=[metrics.exact_match], **common)
  mixtures = set(seqio.MixtureRegistry.names())
  if LIST_FUNCTIONS_MIXTURE not in mixtures:
    seqio.MixtureRegistry.add(LIST_FUNCTIONS_MIXTURE, names, default_rate=1.0)
  if TURING_MIXTURE not in mixtures:
    seqio.MixtureRegistry.add(TURING_MIXTURE, [TURING_TASK], default_rate=1.0)

  twins: dict[str, list[str]] = {}
  for name in sorted(registered):
    twin = _rank_twin_name(name)
    if twin is None:
      continue
    spec = seqio.TaskRegistry.get(name).source.spec
    mixture = f"symbol_tuning_{twin.split('.')[1]}_{spec.setting.name}"
    twins.setdefault(mixture, []).append(twin)
    if twin in registered:
      continue
    seqio.TaskRegistry.add(
        twin, task_cls=pipeline.QueryTask,
        source=pipeline.QuerySource(spec),  # same spec and name: the same prompts
        preprocessors=[functools.partial(pipeline.build_prompts, spec=spec), expand_options,
                       seqio.preprocessors.append_eos_after_trim],
        metric_fns=[metrics.rank_classification], **common)
  for mixture, tasks in twins.items():
    if mixture not in mixtures:
      seqio.MixtureRegistry.add(mixture, tasks, default_rate=1.0)
