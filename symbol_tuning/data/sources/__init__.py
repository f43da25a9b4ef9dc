"""Data sources: turn a catalogue entry into validated, labelled examples.

`load_split(entry, split)` is the one entry point; it dispatches on `entry.source`
(hf | bigbench), or reads TFDS for an entry with a `tfds` block when the run selects
source `tfds`, and caches per process, so a dataset is read once however many tasks and
settings use it.

The run's choice (`selection()`), first found of: gin (`selection.source = 'tfds'`,
`selection.tfds_data_dir = 'gs://...'`), `select()` (the CLI's --source / --tfds_data_dir),
$SYMBOL_TUNING_DATA_SOURCE / $TFDS_DATA_DIR (settings.py), else hf and no data dir (t5x's
--tfds_data_dir, else TFDS's default). Entries TFDS lacks keep their own source.
"""
import dataclasses
import functools

import gin

from symbol_tuning import paths, settings
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources import bigbench, hf
from symbol_tuning.data.sources.examples import DataSourceError, LoadedSplit, LocalCopyError

__all__ = ["DataSourceError", "LoadedSplit", "LocalCopyError", "Selection", "load_split",
           "select", "selection"]
SOURCES = ("hf", "tfds")


@dataclasses.dataclass(frozen=True)
class Selection:
  """Where one run reads the datasets TFDS has."""

  source: str = "hf"  # hf: the hub or a local copy; tfds: TFDS where the entry has it
  tfds_data_dir: str | None = None  # a folder or gs:// URL, kept as text

  def reads_tfds(self, entry: catalogue.DatasetEntry) -> bool:
    return self.source == "tfds" and entry.tfds is not None


_chosen = Selection(source=None)  # select()'s values; None: not chosen
_received: dict = {}  # in a prompt worker: {(entry, split): LoadedSplit} from its main process


def select(source: str | None = None, tfds_data_dir: str | None = None) -> bool:
  """The CLI's --source / --tfds_data_dir; None leaves that one to the environment. A change forgets the loaded data and returns True
  (then pipeline.clear_caches() forgets the prompt builders that hold some)."""
  global _chosen
  if Selection(source, tfds_data_dir) == _chosen:
    return False
  _chosen = Selection(source, tfds_data_dir)
  _load_split.cache_clear()
  return True


@gin.configurable
def selection(source: str | None = None, tfds_data_dir: str | None = None) -> Selection:
  """The run's choice (module docstring): gin binds this function's arguments.

  selection() -> Selection("hf", None) with nothing set;  with --source tfds and
  TFDS_DATA_DIR=gs://b/tfds -> Selection("tfds", "gs://b/tfds").
  """
  chosen = Selection(source or _chosen.source or settings.data_source() or "hf",
                     tfds_data_dir or _chosen.tfds_data_dir or settings.tfds_data_dir())
  if chosen.source not in SOURCES:
    raise ValueError(f"data source {chosen.source!r}: expected one of {', '.join(SOURCES)} "
                     "(--source, gin symbol_tuning.data.sources.selection.source, or "
                     "$SYMBOL_TUNING_DATA_SOURCE)")
  return chosen


def for_workers(entry: catalogue.DatasetEntry, splits) -> dict:
  """{(entry, split): LoadedSplit} of the splits a prompt worker cannot read itself, read
  here: TFDS needs TensorFlow, which workers do not import (and t5x's --tfds_data_dir lives
  in this process's seqio). {} where the worker reads the data itself."""
  if not selection().reads_tfds(entry):
    return {}
  return {(entry, split): load_split(entry, split) for split in sorted(set(splits))}


def receive(splits: dict) -> None:
  """In a prompt worker: splits its main process read (for_workers), served by load_split."""
  _received.update(splits)


def load_split(entry: catalogue.DatasetEntry, split: str) -> LoadedSplit:
  """Validated examples of one split of one dataset (cached), from the selected source."""
  received = _received.get((entry, split))
  if received is not None:
    return received
  return _load_split(entry, split, selection())


@functools.cache
def _load_split(entry: catalogue.DatasetEntry, split: str, chosen: Selection) -> LoadedSplit:
  if chosen.reads_tfds(entry):
    from symbol_tuning.data.sources import tfds_source  # pylint: disable=g-import-not-at-top

    return tfds_source.load_split(entry, split, chosen.tfds_data_dir)
  loader = {"hf": hf.load_split, "bigbench": bigbench.load_split}.get(entry.source)
  if loader is None:
    raise DataSourceError(f"{entry.key}: unknown source {entry.source!r}")
  return loader(entry, split)


def origin(entry: catalogue.DatasetEntry) -> str:
  """Where the selected source reads a dataset, without reading it: 'tfds:glue/sst2:2.0.0',
  'hf:nyu-mll/glue/sst2@main', 'local:/data/sst2' (a copy in $SYMBOL_TUNING_DATA_DIR), or
  'bigbench:navigate'."""
  if selection().reads_tfds(entry):
    return f"tfds:{entry.tfds.name}"
  local = settings.data_dir()
  if entry.source == "hf" and local is not None and (local / entry.key).is_dir():
    return f"local:{local / entry.key}"
  if entry.source == "hf":
    return hf.hub_origin(entry)
  return f"{entry.source}:{entry.path or entry.key}"


def instruction(entry: catalogue.DatasetEntry) -> str | None:
  """The instruction line: the catalogue's, else (BIG-bench) the task's own text."""
  if entry.instruction or entry.source != "bigbench":
    return entry.instruction
  return bigbench.instruction_text(bigbench.read_task(entry.path))


def clear_caches() -> None:
  """Forgets every loaded dataset (after moving SYMBOL_TUNING_DATA_DIR or BIGBENCH_DIR)."""
  _load_split.cache_clear()
  bigbench.read_task.cache_clear()
  hf.hub_unreachable.cache_clear()
  paths.forget_checks()
