"""HuggingFace datasets as a data source, redirectable to a local copy.

Resolution for a catalogue entry with key K and split S:
  1. $SYMBOL_TUNING_DATA_DIR/K/ if it exists:
     - a `datasets` save_to_disk directory (DatasetDict with dataset_dict.json, or a
       single split saved directly), or
     - files named S.jsonl / S.json / S.parquet / S.csv (one record per row with the
       entry's input and label fields; labels as ints or as the dataset's label names).
  2. the hub: datasets.load_dataset(hf_id, hf_config, split=S, revision=hf_revision).
     With HF_DATASETS_OFFLINE=1 this reads only the local HF cache.
An air-gapped cluster exports once, on a machine with access:
  python -m symbol_tuning.sources.hf export --out /data/symbol_tuning  (every entry)
"""
import argparse
import functools
import os
import pathlib
import socket
import sys
import urllib.parse

from symbol_tuning import catalogue, resources
from symbol_tuning.sources.examples import DataSourceError, LoadedSplit, to_examples

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _local_dataset(entry: catalogue.DatasetEntry, split: str):
  """(dataset, origin) from $SYMBOL_TUNING_DATA_DIR, or None if there is no local copy."""
  root = resources.data_dir()
  if root is None or not (root / entry.key).is_dir():
    return None
  import datasets  # pylint: disable=g-import-not-at-top

  folder = root / entry.key
  if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
      if split not in loaded:
        raise DataSourceError(f"dataset {entry.key!r}: {folder} has splits {list(loaded)}, "
                              f"not {split!r}")
      loaded = loaded[split]
    return loaded, str(folder)
  for suffix, builder in LOCAL_FORMATS.items():
    path = folder / f"{split}{suffix}"
    if path.is_file():
      return datasets.load_dataset(builder, data_files=str(path), split="train"), str(path)
  raise DataSourceError(
      f"dataset {entry.key!r}: {folder} holds no split {split!r} (expected a save_to_disk "
      f"directory or one of {[split + s for s in LOCAL_FORMATS]})")


@functools.cache
def hub_unreachable() -> str | None:
  """Why the hub cannot be reached, or None. Checked once per process: without this,
  `datasets` retries for about 30 s per dataset on a machine with no route to the hub."""
  if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
    return None  # offline mode reads the local HF cache; let `datasets` do it
  endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
  host = urllib.parse.urlparse(endpoint).hostname or endpoint
  try:
    with socket.create_connection((host, 443), timeout=5):
      return None
  except OSError as e:
    return f"{host} is unreachable ({e})"


def _hub_dataset(entry: catalogue.DatasetEntry, split: str):
  import datasets  # pylint: disable=g-import-not-at-top

  origin = f"hf:{entry.hf_id}" + (f"/{entry.hf_config}" if entry.hf_config else "")
  reason = hub_unreachable()
  if reason:
    raise DataSourceError(
        f"dataset {entry.key!r}: cannot load {origin} split {split!r}: the HuggingFace hub "
        f"{reason}. Point SYMBOL_TUNING_DATA_DIR at a local copy: "
        f"<dir>/{entry.key}/{split}.jsonl or a save_to_disk directory (README, Local data)")
  try:
    ds = datasets.load_dataset(entry.hf_id, entry.hf_config, split=split,
                               revision=entry.hf_revision)
  except Exception as e:  # the hub raises many types; all mean "not available here"
    raise DataSourceError(
        f"dataset {entry.key!r}: cannot load {origin} split {split!r} from the HuggingFace "
        f"hub ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
        f"Point SYMBOL_TUNING_DATA_DIR at a local copy: <dir>/{entry.key}/{split}.jsonl or a "
        f"save_to_disk directory (README, Local data)") from None
  return ds, origin


def load_split(entry: catalogue.DatasetEntry, split: str) -> LoadedSplit:
  found = _local_dataset(entry, split) or _hub_dataset(entry, split)
  ds, origin = found
  columns = ds.to_dict()  # plain lists: HF 5.x columns are lazy objects
  names = list(columns)
  n = len(columns[names[0]]) if names else 0
  rows = ({name: columns[name][i] for name in names} for i in range(n))
  cap = entry.max_examples if split == entry.train_split else None
  return to_examples(entry, rows, split, origin, cap=cap)


def export(out: pathlib.Path, groups=("tune", "eval")) -> None:
  """Writes every catalogued HF dataset's splits as <out>/<key>/<split>.jsonl."""
  import datasets  # pylint: disable=g-import-not-at-top

  for group in groups:
    for entry in catalogue.load(group):
      splits = sorted({entry.train_split, entry.query_split})
      for split in splits:
        ds = datasets.load_dataset(entry.hf_id, entry.hf_config, split=split,
                                   revision=entry.hf_revision)
        path = out / entry.key / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_json(str(path), lines=True)
        print(f"{entry.key}/{split}: {len(ds)} rows -> {path}", file=sys.stderr)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Export catalogued HF datasets to JSONL.")
  parser.add_argument("command", choices=["export"])
  parser.add_argument("--out", required=True, type=pathlib.Path)
  args = parser.parse_args(argv)
  export(args.out)


if __name__ == "__main__":
  main()
