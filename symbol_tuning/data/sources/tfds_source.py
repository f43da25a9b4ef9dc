"""TensorFlow Datasets as a data source: the catalogue entries with a `tfds` block, read
through `seqio.TfdsDataSource` from a prepared TFDS data directory (local or gs://).

An entry's `tfds` block (catalogue.TfdsSource) names the builder and pinned version and
maps TFDS's features onto the entry's fields, so the records are the ones the hub path
validates. Example (TREC, tfds {"name": "trec:1.0.0", "fields": {"coarse_label":
"label-coarse"}}; TFDS orders the coarse classes DESC, ENTY, ABBR, HUM, NUM, LOC):
  {"text": b"How far is it from Denver to Aspen ?", "label-coarse": 5, "label-fine": 40}
    -> {"text": "How far is it from Denver to Aspen ?", "coarse_label": 4}
       (TFDS's class 5 is LOC, the catalogue's class 4; the remap is said once)
    -> Example(index=i, text="How far is it from Denver to Aspen ?", label=4)
A label of -1 (TFDS's "no label", e.g. GLUE's test splits) is filtered and counted as
unlabelled. Class names that are not the catalogue's (in any order) are refused, naming
the dataset and both lists. Nothing is downloaded here: a data directory without the
pinned version is one line naming the dataset and the command that prepares it:
  python -m symbol_tuning.data.sources.tfds_source prepare --data_dir DIR [--keys trec,...]
(or `tfds build trec:1.0.0 --data_dir=DIR`, whose CLI needs apache-beam installed).
"""
import argparse
import dataclasses
import re
import sys

from symbol_tuning import paths, settings
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources import hf
from symbol_tuning.data.sources.examples import DataSourceError, LoadedSplit, to_examples

README_SECTION = "README, 'TFDS sources'"
READ_BATCH = 1024  # examples per tf.data step: one at a time costs ~0.1 ms each in Python
NO_LABEL = -1  # TFDS's label for unlabelled examples


def default_data_dir() -> str:
  """Where TFDS reads and `tfds build` writes when no directory is named."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top

  return str(constants.DATA_DIR)


def data_dir_in_use(data_dir: str | None) -> str:
  """The folder TFDS reads for `data_dir` in this process: t5x's --tfds_data_dir where t5x
  gave it to seqio (seqio prefers it), else `data_dir`, else TFDS's default."""
  import seqio  # pylint: disable=g-import-not-at-top

  probe = seqio.utils.LazyTfdsLoader("any:0.0.0", data_dir=data_dir)  # touches no files
  return probe.data_dir or default_data_dir()


def build_command(entry: catalogue.DatasetEntry, data_dir: str) -> str:
  """The commands that prepare the pinned version: ours (`prepare`, below), or TFDS's CLI
  (which needs apache-beam installed)."""
  return (f"`python -m symbol_tuning.data.sources.tfds_source prepare --data_dir {data_dir} "
          f"--keys {entry.key}` (or `tfds build {entry.tfds.name} --data_dir={data_dir}`)")


def _prepared_versions(spec: catalogue.TfdsSource, root: str) -> list[str] | None:
  """The versions of the builder prepared under `root`; None if `root` does not exist."""
  from etils import epath  # pylint: disable=g-import-not-at-top

  def look():
    top = epath.Path(root)
    if not top.exists():
      return None
    folder = top / spec.builder_name
    # Only finished versions: `download_and_prepare` writes into incomplete.* and renames.
    return sorted(p.name for p in folder.iterdir()
                  if re.fullmatch(r"\d+\.\d+\.\d+", p.name)) if folder.exists() else []

  return paths.call_bounded(look, f"cannot list the TFDS data dir {root}",
                            settings.storage_timeout())


def _not_readable(entry: catalogue.DatasetEntry, spec: catalogue.TfdsSource, root: str,
                  error: Exception) -> DataSourceError:
  """One line for a data directory that cannot serve the entry: what is wrong, what to do."""
  build = build_command(entry, root)
  try:
    versions = _prepared_versions(spec, root)
  except paths.StoragePathError as e:
    return DataSourceError(f"dataset {entry.key!r}: TFDS {spec.name}: {e}")
  if versions is None:
    return DataSourceError(
        f"dataset {entry.key!r}: the TFDS data dir {root} does not exist; prepare "
        f"{spec.name} there with {build}, or point --tfds_data_dir / $TFDS_DATA_DIR at the "
        f"folder that holds it ({README_SECTION})")
  if spec.version not in versions:
    found = f"prepared there: {', '.join(versions)}" if versions else "none prepared there"
    return DataSourceError(
        f"dataset {entry.key!r}: TFDS {spec.name} is not prepared in {root} ({found}); "
        f"run {build} ({README_SECTION})")
  return DataSourceError(f"dataset {entry.key!r}: cannot read TFDS {spec.name} from {root} "
                         f"({hf.error_chain(error)})")


def _label_feature(entry: catalogue.DatasetEntry, spec: catalogue.TfdsSource, features,
                   origin: str) -> tuple[str, list[str]]:
  """(TFDS feature holding the label, its ClassLabel names)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  (name,) = spec.features(entry.label_field)
  feature = features[name]
  if not isinstance(feature, tfds.features.ClassLabel):
    raise DataSourceError(f"dataset {entry.key!r} ({origin}): feature {name!r} is "
                          f"{type(feature).__name__}, not a ClassLabel; fix the entry's "
                          f"tfds.fields in tasks/{entry.group}.json")
  return name, list(feature.names)


def _check_features(entry: catalogue.DatasetEntry, spec: catalogue.TfdsSource, features,
                    origin: str) -> None:
  for field in (*entry.input_fields, entry.label_field):
    missing = [f for f in spec.features(field) if f not in features]
    if missing:
      raise DataSourceError(
          f"dataset {entry.key!r} ({origin}): field {field!r} reads TFDS feature(s) "
          f"{missing}, which the builder does not have (it has {sorted(features)}); fix the "
          f"entry's tfds.fields in tasks/{entry.group}.json")


def class_values(entry: catalogue.DatasetEntry, spec: catalogue.TfdsSource,
                 names: list[str], origin: str) -> tuple[list, str | None]:
  """The catalogue's raw label value for each TFDS class value, and a remap note (or None).

  TFDS's names are checked against the entry's (tfds.label_names, else label_names) with the
  hub path's rule (hf.label_value_map): same order, a permutation (remapped), or refused.
  trec, TFDS names [DESC, ENTY, ABBR, HUM, NUM, LOC] -> ([2, 1, 0, 3, 5, 4], "... remapped")
  winogrande, TFDS names ["1", "2"], label_values ["1", "2"] -> (["1", "2"], None)
  """
  expected = spec.label_names or entry.label_names
  if not expected:
    raise DataSourceError(f"dataset {entry.key!r} ({origin}): the catalogue names no classes "
                          f"to check TFDS's {names} against; add tfds.label_names to "
                          f"tasks/{entry.group}.json")
  view = dataclasses.replace(entry, label_names=tuple(expected),
                             label_values=tuple(range(len(expected))))
  mapping = hf.label_value_map(view, names, origin, "tfds.label_names" if spec.label_names
                               else "label_names") or {}
  values = [entry.raw_label_values[mapping.get(i, i)] for i in range(len(names))]
  note = None
  if mapping:
    note = (f"dataset {entry.key!r}: {origin} orders the classes of {entry.label_field!r} "
            f"as {names}; labels remapped by name to the catalogue's order {list(expected)}")
  return values, note


def _records(dataset, entry: catalogue.DatasetEntry, spec: catalogue.TfdsSource,
             label_feature: str, values: list):
  """The TFDS examples as records in the entry's field names (text as str)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for batch in tfds.as_numpy(dataset.batch(READ_BATCH)):
    columns = {}
    for field in entry.input_fields:
      parts = [[text.decode("utf-8") for text in batch[f]] for f in spec.features(field)]
      columns[field] = [" ".join(texts) for texts in zip(*parts)]
    labels = batch[label_feature].tolist()
    for i, label in enumerate(labels):
      record = {field: column[i] for field, column in columns.items()}
      record[entry.label_field] = NO_LABEL if label < 0 else values[label]
      yield record


def load_split(entry: catalogue.DatasetEntry, split: str, data_dir: str | None) -> LoadedSplit:
  """Validated examples of one split, read through seqio.TfdsDataSource (read-only: never
  downloads) from `data_dir_in_use(data_dir)`."""
  import seqio  # pylint: disable=g-import-not-at-top

  spec = entry.tfds
  root = data_dir_in_use(data_dir)
  source = seqio.TfdsDataSource(tfds_name=spec.name, tfds_data_dir=root, read_only=True)
  origin = f"tfds:{spec.name} ({root})"
  tfds_split = spec.split(split)
  try:
    features = source.tfds_dataset.info.features
    dataset = source.get_dataset(split=tfds_split, shuffle=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises many types)
    raise _not_readable(entry, spec, root, e) from None
  _check_features(entry, spec, features, origin)
  label_feature, names = _label_feature(entry, spec, features, origin)
  values, note = class_values(entry, spec, names, origin)
  if note:
    hf.say_once(note)
  # -1 is filtered as unlabelled, like the entry's own drop values.
  view = dataclasses.replace(entry, drop_label_values=(*entry.drop_label_values, NO_LABEL))
  cap = entry.max_examples if split == entry.train_split else None
  try:
    loaded = to_examples(view, _records(dataset, entry, spec, label_feature, values), split,
                         origin, cap=cap)
  except DataSourceError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (a damaged record file, read lazily)
    raise _not_readable(entry, spec, root, e) from None
  return dataclasses.replace(loaded, notes=(note,) if note else ())


def tfds_entries(keys=None) -> list[catalogue.DatasetEntry]:
  """The catalogue entries TFDS has (all, or those of `keys`: unknown keys are an error)."""
  found = [e for group in ("tune", "eval") for e in catalogue.load(group) if e.tfds]
  if keys:
    unknown = sorted(set(keys) - {e.key for e in found})
    if unknown:
      raise DataSourceError(f"no TFDS entry {unknown}; the catalogue's TFDS datasets are "
                            f"{[e.key for e in found]}")
    found = [e for e in found if e.key in keys]
  return found


def prepare(data_dir: str, keys=None) -> list[tuple[str, str, str | None]]:
  """Prepares each entry's pinned TFDS version in `data_dir` (downloads the publisher's files,
  as `tfds build NAME:VERSION` does, without the tfds CLI's apache-beam import). A dataset
  that fails is reported and the others go on. Returns (key, TFDS name, error or None)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  report = []
  for entry in tfds_entries(keys):
    try:
      tfds.builder(entry.tfds.name, data_dir=data_dir).download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (downloads fail in many ways)
      report.append((entry.key, entry.tfds.name, hf.error_chain(e)))
      print(f"{entry.key}: {entry.tfds.name}: FAILED: {hf.error_chain(e)}", file=sys.stderr)
      continue
    report.append((entry.key, entry.tfds.name, None))
    print(f"{entry.key}: {entry.tfds.name} prepared in {data_dir}", file=sys.stderr)
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="The catalogue's TFDS datasets: `names` prints their pinned TFDS names; "
                  "`prepare` builds them into a TFDS data dir (README, 'TFDS sources')")
  parser.add_argument("command", choices=["names", "prepare"])
  parser.add_argument("--data_dir", default=None,
                      help="folder or gs:// URL (default: $TFDS_DATA_DIR, else TFDS's own)")
  parser.add_argument("--keys", default=None, help="comma-separated dataset keys (default: all)")
  args = parser.parse_args(argv)
  keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
  try:
    if args.command == "names":
      print("\n".join(e.tfds.name for e in tfds_entries(keys)))
      return 0
    data_dir = args.data_dir or settings.tfds_data_dir() or default_data_dir()
    report = prepare(data_dir, keys)
  except DataSourceError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  failed = [key for key, _, error in report if error]
  print(f"prepared {len(report) - len(failed)} of {len(report)} TFDS datasets in {data_dir}"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
