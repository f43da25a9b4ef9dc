"""Raw records -> validated `Example`s, with every filtered record counted by reason.

Example (RTE, input_fields premise/hypothesis, labels entailment / not entailment):
  {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}
    -> Example(index=0, text="A dog runs.\\nAn animal moves.", label=0)
  {"premise": " ", ...}            -> filtered, counted as "empty_input:premise"
  {"premise": ..., "label": -1}    -> filtered, counted as "unlabelled" (drop_label_values)
  {"premise": ..., "label": 7}     -> DataSourceError naming dataset, example 12, field label
"""
import collections
import dataclasses
import hashlib
import random
from typing import Any, Iterable

from symbol_tuning import catalogue
from symbol_tuning.prompts import Example


class DataSourceError(ValueError):
  """Bad or missing data: names the dataset, the split, the example and the field."""


@dataclasses.dataclass(frozen=True)
class LoadedSplit:
  """The usable examples of one split and what was filtered out of it."""

  dataset: str  # catalogue key
  split: str
  examples: tuple[Example, ...]
  num_records: int  # records read from the source
  filtered: dict[str, int]  # reason -> count (empty_input:<field>, unlabelled, over_cap, ...)
  origin: str  # where the records came from (path or hub id), for reports

  def as_dict(self) -> dict:
    return {"dataset": self.dataset, "split": self.split, "num_examples": len(self.examples),
            "num_records": self.num_records, "filtered": dict(self.filtered),
            "origin": self.origin}


def stable_seed(*parts: Any) -> int:
  """A 64-bit seed from any parts, identical on every machine (unlike hash())."""
  digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little")


def _class_index(entry: catalogue.DatasetEntry, value, where: str) -> int | None:
  """Class of a raw label value; None for values the entry drops."""
  if value in entry.drop_label_values:
    return None
  if value in entry.raw_label_values:
    return entry.raw_label_values.index(value)
  if isinstance(value, str) and value in entry.label_names:
    return entry.label_names.index(value)
  if isinstance(value, str) and value in entry.labels:
    return entry.labels.index(value)
  known = list(entry.raw_label_values) + list(entry.label_names)
  raise DataSourceError(
      f"{where}, field {entry.label_field!r}: label {value!r} is outside the class list "
      f"{known}")


def to_examples(entry: catalogue.DatasetEntry, records: Iterable[dict], split: str,
                origin: str, cap: int | None = None) -> LoadedSplit:
  """Validates records; filters (and counts) unlabelled and empty ones; applies the cap."""
  examples, filtered, num = [], collections.Counter(), 0
  for index, record in enumerate(records):
    num += 1
    where = f"dataset {entry.key!r} ({origin}), split {split!r}, example {index}"
    texts = []
    for field in entry.input_fields:
      if field not in record:
        raise DataSourceError(f"{where}: missing field {field!r} (has {sorted(record)})")
      value = record[field]
      if value is None or not str(value).strip():
        texts = None
        filtered[f"empty_input:{field}"] += 1
        break
      texts.append(str(value).strip())
    if texts is None:
      continue
    if entry.label_field not in record:
      raise DataSourceError(f"{where}: missing field {entry.label_field!r}")
    label = _class_index(entry, record[entry.label_field], where)
    if label is None:
      filtered["unlabelled"] += 1
      continue
    examples.append(Example(index=index, text="\n".join(texts), label=label))
  if cap is not None and len(examples) > cap:
    # A fixed random subset (seeded by the dataset), kept in source order.
    keep = sorted(random.Random(stable_seed("cap", entry.key, split)).sample(
        range(len(examples)), cap))
    filtered["over_cap"] += len(examples) - cap
    examples = [examples[i] for i in keep]
  return LoadedSplit(entry.key, split, tuple(examples), num, dict(filtered), origin)
