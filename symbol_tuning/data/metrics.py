"""Metric functions, shared by `symbol-tuning eval` and seqio (t5x's eval binary).

Exact match (`normalize`): both texts are stripped of leading and trailing whitespace and
compared case-sensitively. Case matters because labels and symbols can differ by case only
("T"/"t" are distinct letter strings; BIG-bench's exact_str_match is case-sensitive too),
and a List Functions answer is a string to reproduce, not a label. `ignore_case=True` is
available for studies that want the looser reading.

seqio wiring (see symbol_tuning/data/tasks.py and data/algorithmic.py):
  * eval and algorithmic tasks: `postprocess_fn=postprocess`, `metric_fns=[exact_match]`
    (a predict metric: t5x decodes, seqio compares with `targets_pretokenized`);
  * rank-classification twins (`symbol_tuning.eval_rank.*`, one example per label option,
    each carrying `query`, `option` and `gold`): `metric_fns=[rank_classification]`, a score
    metric. t5x scores each option's target tokens (log-likelihood incl. EOS); the metric
    takes the argmax per query, as t5's rank_classification does.
This module is pure Python: importing it never pulls in jax or TensorFlow.
"""
import numbers
from typing import Any, Mapping, Sequence


def normalize(text: Any, ignore_case: bool = False) -> str:
  """The text exact match compares: str, stripped, optionally lowercased."""
  if isinstance(text, bytes):
    text = text.decode("utf-8", errors="replace")
  text = str(text).strip()
  return text.lower() if ignore_case else text


def is_exact_match(prediction: Any, target: Any, ignore_case: bool = False) -> bool:
  return normalize(prediction, ignore_case) == normalize(target, ignore_case)


def _feature(example: Mapping | None, name: str):
  if example is None or name not in example:
    return None
  value = example[name]
  return int(value) if isinstance(value, numbers.Integral) else value  # np.int32 -> int


def postprocess(output: Any, example: Mapping | None = None, is_target: bool = False):
  """seqio postprocess_fn. Texts -> normalized str; a rank twin's target -> the dict
  {"query", "option", "gold"} that `rank_classification` groups by."""
  if is_target:
    option = _feature(example, "option")
    if option is not None:
      return {"query": _feature(example, "query"), "option": option,
              "gold": _feature(example, "gold")}
  return normalize(output)


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict:
  """seqio predict metric: percentage of predictions equal to their target."""
  if not targets:
    return {"exact_match": 0.0}
  hits = sum(is_exact_match(p, t) for t, p in zip(targets, predictions))
  return {"exact_match": 100.0 * hits / len(targets)}


def rank_predictions(targets: Sequence[Mapping], scores: Sequence[float]) -> dict:
  """query -> (predicted option, gold option); ties go to the lowest option index."""
  best: dict = {}
  for target, score in zip(targets, scores):
    query, option = target["query"], target["option"]
    score = float(score)
    current = best.get(query)
    if current is None or score > current[1] or (score == current[1] and option < current[0]):
      best[query] = (option, score, target["gold"])
  return {q: (opt, gold) for q, (opt, _, gold) in best.items()}


def rank_classification(targets: Sequence[Mapping], scores: Sequence[float]) -> dict:
  """seqio score metric: accuracy of argmax_option log p(option | prompt) per query."""
  predicted = rank_predictions(targets, scores)
  if not predicted:
    return {"rank_classification_accuracy": 0.0}
  hits = sum(opt == gold for opt, gold in predicted.values())
  return {"rank_classification_accuracy": 100.0 * hits / len(predicted)}
