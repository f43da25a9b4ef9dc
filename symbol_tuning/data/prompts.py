"""In-context prompts for symbol tuning and evaluation (SPEC sections 3 and 6). Pure Python.

A prompt is k exemplars per class drawn from the training examples, shuffled, then the
query, all rendered with one of ten input-label templates; the label of every class is a
natural label, a symbol, or (binary tasks) the other class's natural label. Example, with
template 1, symbols and k = 2:

    Input: the film is a delight          <- exemplar, class "positive" -> "4242"
    Output: 4242
                                          <- exemplars separated by a blank line
    Input: a tedious mess
    Output: GIL
    ...
    Input: an unexpected joy              <- the query, ending after the label prefix
    Output:
  targets: "4242"

Everything random comes from one `random.Random(seed)`, so a seed fixes the prompt on any
machine. Prompts can be fitted to a token budget: whole exemplars are dropped (the same k
for every class, at least one per class); the query is never cut.
"""
import dataclasses
import functools
import random
from typing import Callable, Sequence

# The ten input-label templates of the paper, numbered 1..10 as in SPEC section 3.
TEMPLATES = (
    "Input: {x}\nOutput: {y}",
    "Input: {x}\nTarget: {y}",
    "Input: {x}\nSymbol: {y}",
    "Input: {x}\nLabel: {y}",
    "Question: {x}\nAnswer: {y}",
    "Student: {x}\nTeacher: {y}",
    "X = {x}\nY = {y}",
    "Q: {x}\nA: {y}",
    "{x} -> {y}",
    "Sentences: {x}\nMapped To: {y}",
)
EXEMPLAR_SEPARATOR = "\n\n"
LABEL_MODES = ("symbols", "natural", "flipped")


@dataclasses.dataclass(frozen=True)
class Setting:
  """How prompts of one kind are built."""

  name: str  # tune | instruct | instr_labels | instr_symbols | labels | symbols | flipped
  labels: str  # symbols | natural | flipped (binary tasks: natural labels swapped)
  instructions: bool  # prepend the dataset's instruction line
  k_min: int  # exemplars per class, drawn uniformly from k_min..k_max once per prompt
  k_max: int
  symbol_pool: str = "tune"  # which symbol pool feeds labels == "symbols"


SETTINGS = {
    s.name: s
    for s in (
        # Symbol tuning: no instructions, symbols from the tuning pool, k in 2..10.
        Setting("tune", "symbols", False, 2, 10, "tune"),
        # The instruction-tuning stand-in: instruction, natural labels, 0..4 exemplars.
        Setting("instruct", "natural", True, 0, 4),
        # The paper's four evaluation settings and flipped labels, k = 4.
        Setting("instr_labels", "natural", True, 4, 4),
        Setting("instr_symbols", "symbols", True, 4, 4, "eval"),
        Setting("labels", "natural", False, 4, 4),
        Setting("symbols", "symbols", False, 4, 4, "eval"),
        Setting("flipped", "flipped", False, 4, 4),
    )
}
EVAL_SETTINGS = ("instr_labels", "instr_symbols", "labels", "symbols", "flipped")


class PromptError(ValueError):
  """A prompt cannot be built from this data (names the dataset and the example)."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One labelled example: its index in its split, its input text, its class."""

  index: int
  text: str
  label: int


@dataclasses.dataclass(frozen=True)
class LabelledData:
  """A dataset's examples grouped by class, ready for exemplar sampling."""

  name: str  # dataset name, for error messages
  labels: tuple[str, ...]  # natural label per class
  examples: tuple[Example, ...]  # the exemplar source (training split)
  instruction: str | None = None

  @property
  def by_class(self) -> tuple[tuple[int, ...], ...]:
    """Positions in `examples` of each class (computed once)."""
    cached = self.__dict__.get("_by_class")
    if cached is None:
      groups = [[] for _ in self.labels]
      for pos, ex in enumerate(self.examples):
        groups[ex.label].append(pos)
      cached = tuple(tuple(g) for g in groups)
      object.__setattr__(self, "_by_class", cached)
    return cached

  def class_counts(self) -> tuple[int, ...]:
    return tuple(len(g) for g in self.by_class)


@dataclasses.dataclass(frozen=True)
class Prompt:
  inputs: str
  targets: str
  metadata: dict  # template, k, symbols, gold, options, ... (see build_prompt)
  input_ids: list[int] | None = None  # with piece_ids: the ids of `inputs` (no EOS)


def label_strings(setting: Setting, labels: Sequence[str], rng: random.Random,
                  sample_symbols: Callable[[int, random.Random], list[str]] | None):
  """The string that stands for each class in this prompt."""
  if setting.labels == "natural":
    return list(labels)
  if setting.labels == "flipped":
    if len(labels) != 2:
      raise PromptError(f"flipped labels need a binary task, got {len(labels)} classes")
    return [labels[1], labels[0]]
  return sample_symbols(len(labels), rng)


def render(template: str, x: str, y: str) -> str:
  return template.format(x=x, y=y)


def render_query(template: str, x: str) -> str:
  """The query ends right after the label prefix ("Input: q\\nOutput:")."""
  return template.format(x=x, y="").rstrip(" ")


def _draw_exemplars(data: LabelledData, k: int, rng: random.Random,
                    exclude_index: int | None) -> list[list[int]]:
  """k positions per class, without replacement, never the query itself."""
  chosen = []
  for cls, group in enumerate(data.by_class):
    picks = rng.sample(group, min(len(group), k + 1))
    picks = [p for p in picks if data.examples[p].index != exclude_index][:k]
    if len(picks) < k:
      raise PromptError(
          f"{data.name}: class {data.labels[cls]!r} has {len(group)} training examples; "
          f"a prompt needs {k} exemplars per class besides the query")
    chosen.append(picks)
  return chosen


def _largest_fitting_k(piece_counts, fixed: int, sep: int, budget: int, k_drawn: int) -> int:
  """The largest k whose estimated length (sum of pieces) fits the budget."""
  for k in range(k_drawn, 0, -1):
    n_pieces = k * len(piece_counts) + 1
    total = fixed + sum(sum(c[:k]) for c in piece_counts) + sep * (n_pieces - 1)
    if total <= budget:
      return k
  return 0


def build_prompt(data: LabelledData, query: Example, setting: Setting, seed: int, *,
                 sample_symbols=None, count_tokens: Callable[[str], int] | None = None,
                 max_input_tokens: int | None = None, k_max: int | None = None,
                 exclude_query: bool = True,
                 piece_ids: Callable[[str], Sequence[int]] | None = None) -> Prompt:
  """Builds one prompt. Deterministic in (data, query, setting, seed).

  Args:
    data: the exemplar source.
    query: the example to classify; its index is excluded from the exemplars when
      `exclude_query` (queries drawn from the exemplar split).
    setting: see SETTINGS.
    seed: any int.
    sample_symbols: (n, rng) -> n distinct symbols; required for symbol settings.
    count_tokens: text -> number of tokens; with `max_input_tokens`, exemplars are
      dropped until the prompt fits.
    max_input_tokens: the budget for the whole prompt (leave room for EOS yourself).
    k_max: caps the setting's k_max (for a dataset whose smallest class is small).
    piece_ids: text -> token ids, for a tokenizer whose ids of whitespace-joined texts are
      the concatenation of each text's ids (sentencepiece with whitespace splitting, as
      T5's; newlines normalise to spaces). Ids are then composed from memoised pieces
      instead of tokenizing whole prompts, and fitting is exact arithmetic. Takes
      precedence over count_tokens; the prompt's ids are returned in `input_ids`.

  Returns:
    Prompt with metadata: setting, template (1..10), k (per class, after fitting),
    k_drawn, num_dropped (exemplars dropped to fit), symbols (natural label -> string
    used), options (the string per class), gold (class), query_index, exemplars
    (example indices in prompt order), instruction (bool), num_input_tokens (if counted).

  Raises:
    PromptError: too few examples in a class, or the prompt cannot fit even with one
      exemplar per class (the caller counts and skips these).
  """
  rng = random.Random(seed)
  top = setting.k_max if k_max is None else min(setting.k_max, k_max)
  if top < setting.k_min:
    raise PromptError(f"{data.name}: k range {setting.k_min}..{top} is empty")
  k_drawn = rng.randint(setting.k_min, top)
  template_id = rng.randrange(len(TEMPLATES))
  template = TEMPLATES[template_id]
  options = label_strings(setting, data.labels, rng, sample_symbols)
  per_class = _draw_exemplars(data, k_drawn, rng, query.index if exclude_query else None)
  # Interleaving order of all drawn exemplars; dropping to fit keeps the relative order.
  order = sorted(((rng.random(), cls, i) for cls in range(len(per_class))
                  for i in range(k_drawn)))

  header = data.instruction + EXEMPLAR_SEPARATOR if (
      setting.instructions and data.instruction) else ""
  query_text = render_query(template, query.text)
  rendered = [[render(template, data.examples[p].text, options[cls]) for p in picks]
              for cls, picks in enumerate(per_class)]

  def assemble(k):
    body = [rendered[cls][i] for _, cls, i in order if i < k] + [query_text]
    return header + EXEMPLAR_SEPARATOR.join(body)

  k = k_drawn
  inputs = assemble(k)
  num_tokens = input_ids = None
  if piece_ids is not None:
    k, input_ids = _compose_ids(data, per_class, order, options, template, header, query,
                                piece_ids, max_input_tokens, k_drawn)
    inputs = assemble(k)
    num_tokens = len(input_ids) if max_input_tokens is not None else None
  elif count_tokens is not None and max_input_tokens is not None:
    num_tokens = count_tokens(inputs)
    if num_tokens > max_input_tokens:
      # Too long: estimate the largest k from per-piece counts, then confirm exactly.
      pieces = [[count_tokens(r) for r in group] for group in rendered]
      fixed = count_tokens(header) + count_tokens(query_text)
      k = min(k_drawn - 1, _largest_fitting_k(pieces, fixed, count_tokens(EXEMPLAR_SEPARATOR),
                                             max_input_tokens, k_drawn))
      while k >= 1:
        inputs = assemble(k)
        num_tokens = count_tokens(inputs)
        if num_tokens <= max_input_tokens:
          break
        k -= 1
      if k < 1:
        raise PromptError(
            f"{data.name}: example {query.index}: the prompt does not fit "
            f"{max_input_tokens} input tokens even with one exemplar per class")
  kept = [(cls, i) for _, cls, i in order if i < k]
  metadata = {
      "setting": setting.name,
      "template": template_id + 1,
      "k": k,
      "k_drawn": k_drawn,
      "num_dropped": (k_drawn - k) * len(per_class),
      "symbols": dict(zip(data.labels, options)),
      "options": list(options),
      "gold": query.label,
      "query_index": query.index,
      "exemplars": [data.examples[per_class[cls][i]].index for cls, i in kept],
      "instruction": bool(header),
  }
  if num_tokens is not None:
    metadata["num_input_tokens"] = num_tokens
  return Prompt(inputs=inputs, targets=options[query.label], metadata=metadata,
                input_ids=input_ids)


@functools.cache
def _template_parts(template: str) -> tuple[str, str]:
  """'Input: {x}\nOutput: {y}' -> ('Input:', 'Output:'): the text around x, stripped."""
  x_at, y_at = template.index("{x}"), template.index("{y}")
  return template[:x_at].strip(), template[x_at + 3:y_at].strip()


def _compose_ids(data, per_class, order, options, template, header, query, piece_ids,
                 max_input_tokens, k_drawn):
  """(k, ids) of the prompt, composed from memoised pieces; the largest k that fits."""
  pre, mid = (piece_ids(part) for part in _template_parts(template))
  label_ids = [piece_ids(o) for o in options]
  exemplar_ids = [[pre + piece_ids(data.examples[p].text) + mid + label_ids[cls]
                   for p in picks] for cls, picks in enumerate(per_class)]
  head = piece_ids(header.strip())
  tail = pre + piece_ids(query.text) + mid
  k = k_drawn
  if max_input_tokens is not None:
    fixed = len(head) + len(tail)
    lengths = [[len(ids) for ids in group] for group in exemplar_ids]
    while k > 0 and fixed + sum(sum(g[:k]) for g in lengths) > max_input_tokens:
      k -= 1
    if fixed + sum(sum(g[:k]) for g in lengths) > max_input_tokens or (k == 0 and k_drawn):
      raise PromptError(
          f"{data.name}: example {query.index}: the prompt does not fit "
          f"{max_input_tokens} input tokens even with one exemplar per class")
  ids = head[:]  # same sequence type as piece_ids returns (list or array)
  for _, cls, i in order:
    if i < k:
      ids += exemplar_ids[cls][i]
  return k, ids + tail
