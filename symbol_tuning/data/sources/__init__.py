"""Data sources: turn a catalogue entry into validated, labelled examples.

`load_split(entry, split)` is the one entry point; it dispatches on `entry.source`
(hf | bigbench) and caches per process, so a dataset is read once however many tasks
and settings use it.
"""
import functools

from symbol_tuning import paths
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources import bigbench, hf
from symbol_tuning.data.sources.examples import DataSourceError, LoadedSplit, LocalCopyError

__all__ = ["DataSourceError", "LoadedSplit", "LocalCopyError", "load_split"]


@functools.cache
def load_split(entry: catalogue.DatasetEntry, split: str) -> LoadedSplit:
  """Validated examples of one split of one dataset (cached)."""
  loader = {"hf": hf.load_split, "bigbench": bigbench.load_split}.get(entry.source)
  if loader is None:
    raise DataSourceError(f"{entry.key}: unknown source {entry.source!r}")
  return loader(entry, split)


def instruction(entry: catalogue.DatasetEntry) -> str | None:
  """The instruction line: the catalogue's, else (BIG-bench) the task's own text."""
  if entry.instruction or entry.source != "bigbench":
    return entry.instruction
  return bigbench.instruction_text(bigbench.read_task(entry.path))


def clear_caches() -> None:
  """Forgets every loaded dataset (after moving SYMBOL_TUNING_DATA_DIR or BIGBENCH_DIR)."""
  load_split.cache_clear()
  bigbench.read_task.cache_clear()
  hf.hub_unreachable.cache_clear()
  paths.forget_checks()
