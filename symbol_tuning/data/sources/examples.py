"""Raw records -> validated `Example`s, with every filtered record counted by reason.

Example (RTE, input_fields premise/hypothesis, labels entailment / not entailment):
  {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}
    -> Example(index=0, text="A dog runs.\\nAn animal moves.", label=0)
  {"premise": " ", ...}            -> filtered, counted as "empty_input:premise"
  {"premise": ..., "label": -1}    -> filtered, counted as "unlabelled" (drop_label_values)
  {"premise": ..., "label": 7}     -> DataSourceError naming dataset, example 12, field label
  {"hypothesis": ..., "label": 0}  -> DataSourceError: missing field 'premise'
  {"premise": ..., "label": None}  -> DataSourceError: missing field 'label'
  {"premise": 12345, ...}          -> DataSourceError naming example 3, field premise: a
                                      number, not text

The text rule: an input field is text, exactly as the file writes it (a JSON string, any
CSV cell, a string column); its surrounding whitespace is stripped, nothing else changes
('"quoted"', "123", "true" and "null" are those texts). A value of another type (a number,
boolean, list or object) is an error naming dataset, split, example and field, never
converted: the same text could have been written several ways (12345, 12345.0, 1.2345e4),
so a conversion would guess.

The label rule (`label_key`), the same for every dataset and file format: a label is
either a class value or a class name. Integers, integral floats and strings of digits are
class values (1, 1.0, "1" and " 1" are all 1); any other string is a name, matched after
stripping whitespace against the dataset's own class names (`label_names`) and the
catalogue's natural labels; booleans are the names "True" and "False".
"""
import collections
import dataclasses
import hashlib
import math
import random
import re
from typing import Any, Iterable

from symbol_tuning.data import catalogue
from symbol_tuning.data.prompts import Example


class DataSourceError(ValueError):
  """Bad or missing data: names the dataset, the split, the example and the field."""


class LocalCopyError(DataSourceError):
  """The local copy itself is broken: pointing SYMBOL_TUNING_DATA_DIR at it is no remedy."""


@dataclasses.dataclass(frozen=True)
class LoadedSplit:
  """The usable examples of one split and what was filtered out of it."""

  dataset: str  # catalogue key
  split: str
  examples: tuple[Example, ...]
  num_records: int  # records read from the source
  filtered: dict[str, int]  # reason -> count (empty_input:<field>, unlabelled, over_cap, ...)
  origin: str  # where the records came from (path or hub id), for reports
  notes: tuple[str, ...] = ()  # what was done to the data besides filtering (label remaps)

  def as_dict(self) -> dict:
    return {"dataset": self.dataset, "split": self.split, "num_examples": len(self.examples),
            "num_records": self.num_records, "filtered": dict(self.filtered),
            "origin": self.origin, "notes": list(self.notes)}


def stable_seed(*parts: Any) -> int:
  """A 64-bit seed from any parts, identical on every machine (unlike hash())."""
  digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little")


def is_missing(value) -> bool:
  """True for the values a reader gives a field a record lacks (None, NaN)."""
  return value is None or (isinstance(value, float) and math.isnan(value))


_INTEGER = re.compile(r"[+-]?\d+")  # a label text that is a whole number


def label_key(value):
  """A raw label in its comparable form (the label rule in the module docstring).

  1, 1.0, "1", " 1 " -> 1;  "entailment " -> "entailment";  True -> "True";  1.5 -> 1.5
  (no class value or name matches it, so it is reported as outside the class list).
  """
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(value, str):
    text = value.strip()
    return int(text) if _INTEGER.fullmatch(text) else text
  return value


def _kind(value) -> str:
  """'a number', 'a boolean', 'a list'...: what a non-text value is, for errors."""
  if isinstance(value, bool):
    return "a boolean"
  if isinstance(value, (int, float)):
    return "a number"
  return {list: "a list", dict: "an object", bytes: "bytes"}.get(type(value),
                                                                  f"a {type(value).__name__}")


def _label_keys(entry: catalogue.DatasetEntry) -> tuple[list, list]:
  """(dropped label keys, class value keys) of an entry, computed once per split."""
  return ([label_key(v) for v in entry.drop_label_values],
          [label_key(v) for v in entry.raw_label_values])


def _class_index(entry: catalogue.DatasetEntry, value, where: str,
                 keys: tuple[list, list]) -> int | None:
  """Class of a raw label value; None for values the entry drops. keys: _label_keys(entry)."""
  key = label_key(value)
  dropped, values = keys
  if key in dropped:
    return None
  if key in values:
    return values.index(key)
  if isinstance(key, str) and key in entry.label_names:
    return entry.label_names.index(key)
  if isinstance(key, str) and key in entry.labels:
    return entry.labels.index(key)
  known = values + [n for n in entry.label_names if n not in values]
  raise DataSourceError(
      f"{where}, field {entry.label_field!r}: label {value!r} is outside the class list "
      f"{known} (a label is a class value or a class name; README, 'Data sources and "
      f"local copies')")


def to_examples(entry: catalogue.DatasetEntry, records: Iterable[dict], split: str,
                origin: str, cap: int | None = None) -> LoadedSplit:
  """Validates records; filters (and counts) unlabelled and empty ones; applies the cap."""
  examples, filtered, num = [], collections.Counter(), 0
  keys = _label_keys(entry)
  for index, record in enumerate(records):
    num += 1
    where = f"dataset {entry.key!r} ({origin}), split {split!r}, example {index}"
    texts = []
    for field in entry.input_fields:
      if field not in record or is_missing(record[field]):
        present = sorted(k for k, v in record.items() if not is_missing(v))
        raise DataSourceError(f"{where}: missing field {field!r} (has {present})")
      value = record[field]
      if not isinstance(value, str):
        raise DataSourceError(
            f"{where}, field {field!r}: {_kind(value)} ({value!r:.60}), not text; input fields"
            " are text (a JSON string, e.g. \"12345\"; README, 'Data sources and local "
            "copies')")
      if not value.strip():
        texts = None
        filtered[f"empty_input:{field}"] += 1
        break
      texts.append(value.strip())
    if texts is None:
      continue
    if entry.label_field not in record or is_missing(record[entry.label_field]):
      raise DataSourceError(f"{where}: missing field {entry.label_field!r}")
    label = _class_index(entry, record[entry.label_field], where, keys)
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
