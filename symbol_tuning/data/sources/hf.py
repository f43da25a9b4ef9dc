"""HuggingFace datasets as a data source, redirectable to a local copy.

Resolution for a catalogue entry with key K and split S:
  1. $SYMBOL_TUNING_DATA_DIR/K/ if it exists:
     - a `datasets` save_to_disk directory (DatasetDict with dataset_dict.json, or a
       single split saved directly), or
     - exactly one file named S.jsonl / S.json / S.parquet / S.csv (one record per row with
       the entry's input and label fields), read with the types written in it
       (sources/local_files.py; UTF-8 with or without a byte-order mark): input fields
       must be text and labels follow the label rule (sources/examples.py).
  2. the hub: datasets.load_dataset(hf_id, hf_config, split=S, revision=hf_revision).
     With HF_DATASETS_OFFLINE=1 this reads only the local HF cache.
  (A run with --source tfds reads entries with a `tfds` block from TFDS instead:
  sources/tfds_source.py.)
Where the data carries its own class names (a ClassLabel feature: hub, save_to_disk and
parquet copies), they are compared with the catalogue's `label_names`: equal is fine, a
permutation is remapped by name (and said once), anything else is an error.
An air-gapped cluster exports once, on a machine with access:
  python -m symbol_tuning.data.sources.hf export --out /data/symbol_tuning
which writes <out>/K/S.parquet for exactly the splits the tasks read (`used_splits`), and
pins the catalogue's hub revisions to commit shas (sources/hf_pins.py):
  python -m symbol_tuning.data.sources.hf pin [--dataset KEY ...] [--check]
SYMBOL_TUNING_DATA_DIR and --out may be gs:// URLs (read and written through etils.epath;
a save_to_disk copy on gs:// is downloaded to a temporary folder to be read).
"""
import argparse
import contextlib
import dataclasses
import functools
import shutil
import socket
import sys
import urllib.parse

from symbol_tuning import paths, settings
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources import local_files
from symbol_tuning.data.sources.examples import (DataSourceError, LoadedSplit, LocalCopyError,
                                            to_examples)

LOCAL_FORMATS = local_files.FORMATS
README_SECTION = "README, 'Data sources and local copies'"
_SAID: set[str] = set()  # notes already printed (each is said once per process)


def used_splits(entry: catalogue.DatasetEntry) -> tuple[str, ...]:
  """The dataset splits the registered tasks read (symbol_tuning.data.tasks): tuning datasets
  their train split only; evaluation datasets their exemplar and query splits.

  tune mnli -> ("train",);  eval subj -> ("test", "train");  eval RAFT adec -> ("train",)
  """
  if entry.group == "tune":
    return (entry.train_split,)
  return tuple(sorted({entry.train_split, entry.query_split}))


def error_chain(e: BaseException) -> str:
  """'Type: first line' of an exception and each cause below it (datasets wraps the
  parser's message, which names the row, in a generic DatasetGenerationError)."""
  parts, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
    e = e.__cause__ or e.__context__
  return "; ".join(parts)


@contextlib.contextmanager
def _quiet_datasets():
  """datasets without its log lines and progress bars: a failure is reported by the caller,
  naming the file, and reading a local copy needs no bar of its own."""
  import datasets  # pylint: disable=g-import-not-at-top

  verbosity, bars_off = datasets.logging.get_verbosity(), datasets.are_progress_bars_disabled()
  datasets.logging.set_verbosity(datasets.logging.CRITICAL)
  datasets.disable_progress_bars()
  try:
    yield datasets
  finally:
    datasets.logging.set_verbosity(verbosity)
    if not bars_off:
      datasets.enable_progress_bars()


def _rows(ds) -> tuple[list[dict], object]:
  """(records, features) of a datasets.Dataset, values as its features type them."""
  columns = ds.to_dict()  # plain lists: HF 5.x columns are lazy objects
  fields = list(columns)
  n = len(columns[fields[0]]) if fields else 0
  return [{name: columns[name][i] for name in fields} for i in range(n)], ds.features


@contextlib.contextmanager
def _local_folder(folder):
  """A local folder holding save_to_disk copy `folder`: itself, or for gs:// a temporary
  download (through epath, the client every other gs:// file uses; the rows are read into
  memory before it is removed)."""
  if not paths.is_remote(folder):
    yield str(folder)
    return
  local = paths.download_files(folder, paths.list_files(folder))
  try:
    yield local
  finally:
    shutil.rmtree(local, ignore_errors=True)


def _local_dataset(entry: catalogue.DatasetEntry, split: str):
  """(records, features, origin) from $SYMBOL_TUNING_DATA_DIR, or None if there is no local
  copy. Features carry a save_to_disk or parquet copy's class names ({} for text files)."""
  root = settings.data_dir()
  if root is None:
    return None
  try:  # a gs:// folder: its bucket answers, within the storage timeout, or one line
    paths.check_readable(root, "SYMBOL_TUNING_DATA_DIR", settings.storage_timeout())
  except paths.StoragePathError as e:
    raise LocalCopyError(f"dataset {entry.key!r}, split {split!r}: {e}") from None
  folder = root / entry.key
  if not folder.is_dir():
    return None
  if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
    with _quiet_datasets() as datasets, _local_folder(folder) as local:
      try:
        loaded = datasets.load_from_disk(local)
      except Exception as e:  # pylint: disable=broad-except
        raise LocalCopyError(f"dataset {entry.key!r}: cannot read the save_to_disk copy "
                             f"{folder} ({error_chain(e)})") from None
      if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
          raise LocalCopyError(f"dataset {entry.key!r}: {folder} has splits {list(loaded)}, "
                               f"not {split!r}")
        loaded = loaded[split]
      return (*_rows(loaded), str(folder))
  found = [folder / f"{split}{s}" for s in LOCAL_FORMATS if (folder / f"{split}{s}").is_file()]
  if len(found) > 1:
    raise LocalCopyError(
        f"dataset {entry.key!r}: {folder} holds {len(found)} copies of split {split!r} "
        f"({', '.join(p.name for p in found)}); keep one so it is clear which is read")
  if not found:
    raise LocalCopyError(
        f"dataset {entry.key!r}: {folder} holds no split {split!r} (expected a save_to_disk "
        f"directory or one of {[split + s for s in LOCAL_FORMATS]})")
  path = found[0]
  try:
    return (*local_files.read_records(path), str(path))
  except local_files.FileReadError as e:
    raise LocalCopyError(f"dataset {entry.key!r}: cannot read {path}, {e}") from None
  except Exception as e:  # pylint: disable=broad-except  (pyarrow's many types)
    raise LocalCopyError(f"dataset {entry.key!r}: cannot read {path} "
                         f"({error_chain(e)})") from None


@functools.cache
def hub_unreachable() -> str | None:
  """Why the hub cannot be reached, or None. Checked once per process: without this,
  `datasets` retries for about 30 s per dataset on a machine with no route to the hub."""
  if settings.hf_offline():
    return None  # offline mode reads the local HF cache; let `datasets` do it
  endpoint = settings.hf_endpoint()
  host = urllib.parse.urlparse(endpoint).hostname or endpoint
  try:
    with socket.create_connection((host, 443), timeout=5):
      return None
  except OSError as e:
    return f"{host} is unreachable ({e})"


def hub_origin(entry: catalogue.DatasetEntry) -> str:
  """'hf:nyu-mll/glue/sst2@main': the hub id, config and the revision read."""
  config = f"/{entry.hf_config}" if entry.hf_config else ""
  return f"hf:{entry.hf_id}{config}@{entry.hf_revision}"


def _hub_dataset(entry: catalogue.DatasetEntry, split: str):
  origin = hub_origin(entry)
  reason = hub_unreachable()
  if reason:
    raise DataSourceError(
        f"dataset {entry.key!r}: cannot load {origin} split {split!r}: the HuggingFace hub "
        f"{reason}. Point SYMBOL_TUNING_DATA_DIR at a local copy: "
        f"<dir>/{entry.key}/{split}.jsonl or a save_to_disk directory ({README_SECTION})")
  try:
    ds = _hub_split(entry, split)
  except Exception as e:  # the hub raises many types; all mean "not available here"
    raise DataSourceError(
        f"dataset {entry.key!r}: cannot load {origin} split {split!r} from the HuggingFace "
        f"hub ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
        f"Point SYMBOL_TUNING_DATA_DIR at a local copy: <dir>/{entry.key}/{split}.jsonl or a "
        f"save_to_disk directory ({README_SECTION})") from None
  return (*_rows(ds), origin)


def class_names(features, field: str) -> list[str] | None:
  """The data's own class names for `field` (a ClassLabel feature), else None."""
  if not features:
    return None  # a text file: no types of its own
  import datasets  # pylint: disable=g-import-not-at-top

  feature = features.get(field)
  return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def label_value_map(entry: catalogue.DatasetEntry, names: list[str], origin: str,
                    catalogue_field: str = "label_names") -> dict[int, object] | None:
  """How the data's ClassLabel values map onto the catalogue's, from the data's own names.

  The catalogue puts class i's name `label_names[i]` at value `raw_label_values[i]`; the
  other values (e.g. RAFT's 0, "Unlabeled") are drop values whose names are not listed.
  Returns None when the data's names sit where the catalogue expects them, and {data value:
  catalogue value} when they are the same names in another order (TREC saved as DESC,
  ENTY, ABBR, HUM, NUM, LOC -> {0: 2, 1: 1, 2: 0, 3: 3, 4: 5, 5: 4}). Any other names are
  a DataSourceError naming the dataset, the field and both lists (`catalogue_field`: the
  catalogue field that holds the expected names, for that message).
  """
  values = list(entry.raw_label_values)
  if not entry.label_names or not all(isinstance(v, int) for v in values):
    return None  # nothing to compare with (labels stored as strings, e.g. Winogrande)
  expected: list = [None] * (max(values) + 1)  # None: a dropped value, any name
  for value, name in zip(values, entry.label_names):
    expected[value] = name
  if len(names) == len(expected) and all(e in (None, n) for e, n in zip(expected, names)):
    return None
  free_slots = [i for i, e in enumerate(expected) if e is None]
  extra = [n for n in names if n not in entry.label_names]
  if (sorted(set(names) - set(extra)) == sorted(entry.label_names)
      and len(names) == len(set(names)) and len(extra) == len(free_slots)):
    by_name = dict(zip(entry.label_names, values))
    by_name.update(zip(extra, free_slots))
    return {i: by_name[n] for i, n in enumerate(names)}
  shown = ["<dropped>" if e is None else e for e in expected]
  raise DataSourceError(
      f"dataset {entry.key!r} ({origin}): field {entry.label_field!r} has class names "
      f"{names}, but the catalogue (tasks/{entry.group}.json {catalogue_field}) expects "
      f"{shown}; "
      "the labels cannot be mapped by name, so the copy is refused rather than mislabelled")


def say_once(note: str) -> None:
  if note not in _SAID:
    _SAID.add(note)
    print(f"symbol-tuning: {note}", file=sys.stderr)


def _validated(entry: catalogue.DatasetEntry, split: str, rows: list[dict], features,
               origin: str) -> LoadedSplit:
  notes = []
  names = class_names(features, entry.label_field)
  mapping = label_value_map(entry, names, origin) if names else None
  if mapping:
    for row in rows:
      if entry.label_field in row:
        row[entry.label_field] = mapping.get(row[entry.label_field], row[entry.label_field])
    notes.append(f"dataset {entry.key!r}: {origin} orders the classes of "
                 f"{entry.label_field!r} as {names}; labels remapped by name to the "
                 f"catalogue's order {list(entry.label_names)}")
    say_once(notes[-1])
  cap = entry.max_examples if split == entry.train_split else None
  loaded = to_examples(entry, rows, split, origin, cap=cap)
  return dataclasses.replace(loaded, notes=tuple(notes))


def load_split(entry: catalogue.DatasetEntry, split: str) -> LoadedSplit:
  local = _local_dataset(entry, split)
  if local is None:
    return _validated(entry, split, *_hub_dataset(entry, split))
  try:
    return _validated(entry, split, *local)
  except LocalCopyError:
    raise
  except DataSourceError as e:  # the fix is in the local copy, not a new one
    raise LocalCopyError(str(e)) from None


def _hub_split(entry: catalogue.DatasetEntry, split: str):
  """One split from the hub at the entry's revision (required by the catalogue)."""
  import datasets  # pylint: disable=g-import-not-at-top

  return datasets.load_dataset(entry.hf_id, entry.hf_config, split=split,
                               revision=entry.hf_revision)


def export(out, groups=("tune", "eval"), keys=None, load=_hub_split) -> list:
  """Writes each catalogued HF dataset's used splits as <out>/<key>/<split>.parquet.

  Parquet keeps the data's types and ClassLabel names, so the copy is checked against the
  catalogue exactly as the hub would be. `load(entry, split)` -> datasets.Dataset (the hub
  by default). A dataset that fails is reported and the others go on.
  Returns one (key, split, rows or None, path or error) per split tried.
  """
  report, out = [], paths.path(out)  # a folder or gs://
  for group in groups:
    for entry in catalogue.load(group):
      if entry.source != "hf" or (keys and entry.key not in keys):
        continue
      for split in used_splits(entry):
        path = out / entry.key / f"{split}.parquet"
        try:
          ds = load(entry, split)
          path.parent.mkdir(parents=True, exist_ok=True)
          with path.open("wb") as f:
            ds.to_parquet(f)
        except Exception as e:  # pylint: disable=broad-except
          report.append((entry.key, split, None, error_chain(e)))
          print(f"{entry.key}/{split}: FAILED: {error_chain(e)}", file=sys.stderr)
          break  # the dataset's other split is of no use without this one
        report.append((entry.key, split, len(ds), str(path)))
        print(f"{entry.key}/{split} ({hub_origin(entry)}): {len(ds)} rows -> {path}",
              file=sys.stderr)
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="export: write the catalogued HF datasets' used splits to "
                  "<out>/<key>/<split>.parquet; pin: replace each branch hf_revision in "
                  "tasks/*.json with the branch's current commit sha (README, 'Dataset pins')")
  parser.add_argument("command", choices=["export", "pin"])
  parser.add_argument("--out", help="export: a folder or gs://bucket/folder")
  parser.add_argument("--keys", default=None, help="export: comma-separated dataset keys "
                      "(default: all)")
  parser.add_argument("--dataset", action="append", default=None, metavar="KEY",
                      help="pin: this dataset only (repeatable; default: all HF entries)")
  parser.add_argument("--check", action="store_true",
                      help="pin: resolve and report, write nothing; exit 1 if any entry "
                           "still follows a branch")
  parser.add_argument("--tasks-dir", default=None,
                      help="pin: the catalogue folder to rewrite (default: the package's tasks/)")
  args = parser.parse_args(argv)
  if args.command == "pin":
    from symbol_tuning.data.sources import hf_pins  # pylint: disable=g-import-not-at-top

    return hf_pins.pin(args.tasks_dir, args.dataset, args.check)
  if not args.out:
    parser.error("export needs --out")
  keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
  report = export(args.out, keys=keys)
  failed = sorted({key for key, _, rows, _ in report if rows is None})
  written = sorted({key for key, _, rows, _ in report} - set(failed))
  print(f"exported {len(written)} datasets to {args.out}"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
  return 1 if failed or not report else 0


if __name__ == "__main__":
  sys.exit(main())
