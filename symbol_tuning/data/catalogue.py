"""The task catalogue: one declarative entry per dataset, read from tasks/*.json.

Adding a dataset means adding one entry to a JSON file under tasks/; `symbol_tuning.data.tasks`
registers every entry in one loop. Nothing here touches the data itself.
"""
import dataclasses
import functools
import json
import re

from symbol_tuning import settings

# Each catalogue file and the role its entries play.
CATALOGUE_FILES = {
    "tune": "tune.json",  # the paper's 22 tuning datasets (HF)
    "eval": "eval.json",  # the paper's 11 held-out evaluation datasets (HF)
    "bigbench": "bigbench.json",  # the offline BIG-bench suite (tuning and held out)
}
BIGBENCH_ROLES = ("tune", "heldout")


class CatalogueError(ValueError):
  """A catalogue entry is malformed."""


# A hub revision that pins data: a commit sha. A branch name (main, refs/convert/parquet)
# follows the branch, so `list` marks such an entry unpinned (README, "Dataset pins").
PINNED_REVISION = re.compile(r"[0-9a-f]{40}")


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """Where TFDS keeps a dataset and how its features map onto the entry's fields.

  JSON (tasks/tune.json, an entry's "tfds"):
    {"name": "ag_news_subset:1.0.0", "fields": {"text": ["title", "description"]}}
    -> TfdsSource(name="ag_news_subset:1.0.0", fields=(("text", ("title", "description")),))
  so the entry's field `text` is TFDS's `title` and `description` joined by a space (as the
  hub's copy joins them); a field not in `fields` has the same name in TFDS.
  """

  name: str  # TFDS name/config:version, as `tfds build` and seqio.TfdsDataSource take it
  fields: tuple[tuple[str, tuple[str, ...]], ...] = ()  # entry field -> TFDS feature(s)
  label_names: tuple[str, ...] = ()  # TFDS's class names in the entry's class order
  splits: tuple[tuple[str, str], ...] = ()  # entry split -> TFDS split (e.g. train_xl)

  def features(self, field: str) -> tuple[str, ...]:
    return dict(self.fields).get(field, (field,))

  def split(self, split: str) -> str:
    return dict(self.splits).get(split, split)

  @property
  def builder_name(self) -> str:
    """'glue/sst2:2.0.0' -> 'glue/sst2'."""
    return self.name.split(":", 1)[0]

  @property
  def version(self) -> str:
    return self.name.split(":", 1)[1]


def _tfds_source(raw, origin: str, key: str) -> TfdsSource:
  if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
    raise CatalogueError(f"{origin}: {key}: 'tfds' must be an object with a 'name'")
  unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(TfdsSource)})
  if unknown:
    raise CatalogueError(f"{origin}: {key}: 'tfds' has unknown fields {unknown}")
  if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?:\d+\.\d+\.\d+", raw["name"]):
    raise CatalogueError(f"{origin}: {key}: tfds name {raw['name']!r} must be "
                         "name[/config]:X.Y.Z (a pinned version)")
  fields = tuple((f, (v,) if isinstance(v, str) else tuple(v))
                 for f, v in raw.get("fields", {}).items())
  return TfdsSource(raw["name"], fields, tuple(raw.get("label_names", ())),
                    tuple(raw.get("splits", {}).items()))


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """One dataset: where it comes from, which fields make the input, what its labels are."""

  key: str  # short name used in task names: symbol_tuning.tune.<key>
  name: str  # the paper's name for it (RTE, SST-2, ...)
  group: str  # catalogue file it came from: tune | eval | bigbench
  source: str  # hf | bigbench
  labels: tuple[str, ...]  # natural label text per class, in class order
  input_fields: tuple[str, ...] = ("input",)  # fields joined (one per line) into the input
  label_field: str = "label"  # the field that holds the class
  # Raw label value of each class as stored in the data (ints for HF ClassLabels, the
  # target_scores key for BIG-bench); defaults to 0..n-1.
  label_values: tuple = ()
  label_names: tuple = ()  # the dataset's own names per class (ClassLabel names), accepted too
  drop_label_values: tuple = (-1,)  # raw values filtered out (and counted), e.g. unlabelled
  instruction: str | None = None  # instruction line for the instruction-on settings
  category: str = ""  # NLI, sentiment, ... (informational)
  hf_id: str | None = None  # current canonical HF hub id
  hf_config: str | None = None  # HF config name
  hf_revision: str | None = None  # required for HF entries: a commit sha, or a branch name
  tfds: TfdsSource | None = None  # the dataset in TensorFlow Datasets, if it has a builder
  old_id: str | None = None  # the id the paper used, for reference
  path: str | None = None  # BIG-bench task path, e.g. multiemo/hotels_text_en
  role: str = "tune"  # BIG-bench: tune | heldout
  train_split: str = "train"  # where exemplars (and tuning queries) come from
  query_split: str = "validation"  # where evaluation queries come from
  max_examples: int = 25_000  # cap on training examples (the paper's 25k)
  max_queries: int | None = None  # cap on evaluation queries (the paper's 100)
  notes: str = ""  # anything a user should know about this source

  @property
  def num_classes(self) -> int:
    return len(self.labels)

  @property
  def raw_label_values(self) -> tuple:
    return self.label_values or tuple(range(len(self.labels)))

  @property
  def pinned(self) -> bool:
    """Whether the hub revision is a commit sha (not a branch that moves)."""
    return bool(self.hf_revision and PINNED_REVISION.fullmatch(self.hf_revision))

  @property
  def task_key(self) -> str:
    """Key usable in a seqio task name ('/' -> '_')."""
    return self.key.replace("/", "_")


def _entry(group: str, raw: dict, origin: str) -> DatasetEntry:
  fields = {f.name for f in dataclasses.fields(DatasetEntry)}
  unknown = sorted(set(raw) - fields)
  if unknown:
    raise CatalogueError(f"{origin}: entry {raw.get('key')!r} has unknown fields {unknown}")
  values = dict(raw, group=group)
  if "tfds" in values:
    values["tfds"] = _tfds_source(values["tfds"], origin, raw.get("key"))
  for name in ("labels", "input_fields", "label_values", "label_names", "drop_label_values"):
    if name in values:
      values[name] = tuple(values[name])
  try:
    entry = DatasetEntry(**values)
  except TypeError as e:
    raise CatalogueError(f"{origin}: entry {raw.get('key')!r}: {e}") from None
  if not re.fullmatch(r"[a-z0-9_/]+", entry.key):
    raise CatalogueError(f"{origin}: key {entry.key!r} must be lowercase [a-z0-9_/]")
  if entry.num_classes < 2 or len(set(entry.labels)) != entry.num_classes:
    raise CatalogueError(f"{origin}: {entry.key}: labels must be >= 2 distinct strings")
  if entry.label_values and len(entry.label_values) != entry.num_classes:
    raise CatalogueError(f"{origin}: {entry.key}: label_values must match labels")
  if entry.source == "hf" and not entry.hf_revision:
    raise CatalogueError(f"{origin}: {entry.key}: an HF entry names its hf_revision (a commit "
                         "sha, or the branch it follows: README, 'Dataset pins')")
  if entry.tfds and entry.tfds.label_names and len(entry.tfds.label_names) != entry.num_classes:
    raise CatalogueError(f"{origin}: {entry.key}: tfds label_names must match labels")
  if entry.tfds and len(entry.tfds.features(entry.label_field)) != 1:
    raise CatalogueError(f"{origin}: {entry.key}: tfds fields must map the label field "
                         f"{entry.label_field!r} to one feature")
  if entry.source == "bigbench" and entry.role not in BIGBENCH_ROLES:
    raise CatalogueError(f"{origin}: {entry.key}: role must be one of {BIGBENCH_ROLES}")
  return entry


@functools.cache
def load(group: str) -> tuple[DatasetEntry, ...]:
  """The entries of one catalogue file, in file order."""
  if group not in CATALOGUE_FILES:
    raise CatalogueError(f"unknown catalogue {group!r}; known: {sorted(CATALOGUE_FILES)}")
  path = settings.catalogue_dir() / CATALOGUE_FILES[group]
  with open(path, encoding="utf-8") as f:
    raw_entries = json.load(f)["datasets"]
  entries = tuple(_entry(group, raw, str(path)) for raw in raw_entries)
  keys = [e.key for e in entries]
  if len(set(keys)) != len(keys):
    raise CatalogueError(f"{path}: duplicate keys")
  return entries


def get(group: str, key: str) -> DatasetEntry:
  for entry in load(group):
    if entry.key == key or entry.task_key == key:
      return entry
  raise CatalogueError(f"no dataset {key!r} in catalogue {group!r}; "
                       f"known: {[e.task_key for e in load(group)]}")


def all_entries() -> tuple[DatasetEntry, ...]:
  return tuple(e for group in CATALOGUE_FILES for e in load(group))


def label_words() -> frozenset[str]:
  """Every natural label of every registered dataset, lowercased, and its words.

  Symbol pools exclude these so that no symbol leaks a label's meaning ("not entailment"
  excludes "not" and "entailment"; "T" for true excludes the letter string "T").
  """
  words = set()
  for entry in all_entries():
    for label in entry.labels:
      text = label.strip().lower()
      words.add(text)
      words.update(w for w in re.split(r"[^a-z0-9]+", text) if w)
  return frozenset(words)
