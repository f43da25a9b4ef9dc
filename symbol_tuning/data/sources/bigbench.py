"""BIG-bench task.json files (JSON task format) as a data source.

Where the files come from, first match wins:
  1. $BIGBENCH_DIR/<task path>/task.json (a copy of bigbench/benchmark_tasks, e.g. from a
     clone of BIG-bench's GitHub repository; a folder or gs://bucket/folder, read through
     etils.epath);
  2. the package's own copy: symbol_tuning/assets/bigbench_tasks.tar.xz (4 MB) holds the
     task.json files of every catalogued task and of the algorithmic evaluation tasks
     (Apache-2.0, see assets/BIGBENCH_NOTICE.md). The first use extracts it once, with a
     progress bar, into $SYMBOL_TUNING_CACHE/bigbench/<archive digest>/ and says where.
PyPI has no sdist that holds the tasks (its `bigbench` is 0.0.1, code only), so nothing
is downloaded. Rebuild the archive from a benchmark_tasks copy:
  python -m symbol_tuning.data.sources.bigbench pack /path/to/benchmark_tasks

Quirks handled: `target_scores` is a dict or a string holding a Python dict literal; the
gold class is the unique highest score (ties are filtered and counted); there are no
splits, so a fixed hash of (task, example position) puts min(20%, 500) examples into
"validation" and the rest into "train", identically on every machine.
"""
import ast
import dataclasses
import functools
import hashlib
import io
import json
import lzma
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile

from etils import epath

from symbol_tuning import paths, settings
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources.examples import DataSourceError, LoadedSplit, stable_seed, to_examples

SPLITS = ("train", "validation")
# Generative tasks the evaluation reads besides the catalogued classification tasks.
ALGORITHMIC_TASKS = ("list_functions", "simp_turing_concept")
ARCHIVE_NAME = "bigbench_tasks.tar.xz"
_VALIDATION_FRACTION = 0.2
_VALIDATION_MAX = 500


def wanted_tasks() -> list[str]:
  """The task paths the package needs: the catalogue's and the algorithmic suites'."""
  return [e.path for e in catalogue.load("bigbench")] + list(ALGORITHMIC_TASKS)


def extract_task_files(archive, dest: pathlib.Path, wanted: list[str] | None = None) -> int:
  """Extracts .../benchmark_tasks/<path>/task.json members of a tar archive (a path or a
  binary file object, read as a stream) into dest/<path>/, only those under one of the
  `wanted` task paths when given; returns how many it wrote."""
  count = 0
  source = {"name": archive} if isinstance(archive, (str, os.PathLike)) else {"fileobj": archive}
  with tarfile.open(mode="r|*", **source) as tar:
    for member in tar:
      parts = pathlib.PurePosixPath(member.name).parts
      if not parts or parts[-1] != "task.json" or "benchmark_tasks" not in parts or \
          not member.isfile():
        continue
      rel = pathlib.Path(*parts[parts.index("benchmark_tasks") + 1:])
      if wanted is not None and not any(
          rel.as_posix() == f"{w}/task.json" or rel.as_posix().startswith(f"{w}/")
          for w in wanted):
        continue
      (dest / rel).parent.mkdir(parents=True, exist_ok=True)
      with tar.extractfile(member) as src:
        (dest / rel).write_bytes(src.read())
      count += 1
  return count


@functools.cache
def shipped_root() -> pathlib.Path:
  """The package's archive, extracted once into $SYMBOL_TUNING_CACHE/bigbench/<digest>/.

  Extraction goes to a temporary folder renamed into place, so concurrent first uses
  (pytest-xdist workers, prompt workers) never see a half-written copy.
  """
  archive = settings.assets_dir() / ARCHIVE_NAME
  digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:12]
  root = settings.cache_dir() / "bigbench" / digest
  if root.is_dir():
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=".extract-", dir=root.parent))
  from rich import console, progress  # pylint: disable=g-import-not-at-top

  with progress.open(archive, "rb", description="BIG-bench tasks",
                     console=console.Console(stderr=True), transient=True) as f:
    count = extract_task_files(f, tmp)
  try:
    tmp.rename(root)
  except OSError:  # another process put its copy there first
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"BIG-bench: extracted {count} task.json files from the package's {ARCHIVE_NAME} "
        f"into {root}", file=sys.stderr)
  return root


def task_root(task_path: str) -> epath.Path | pathlib.Path:
  """The benchmark_tasks directory that holds `task_path` (see module docstring)."""
  root = settings.bigbench_dir()
  if root is not None:
    try:  # a gs:// folder: its bucket answers, within the storage timeout, or one line
      paths.check_readable(root, "BIGBENCH_DIR", settings.storage_timeout())
    except paths.StoragePathError as e:
      raise DataSourceError(f"BIG-bench task {task_path!r}: {e}") from None
    if not (root / task_path / "task.json").is_file():
      raise DataSourceError(f"BIG-bench task {task_path!r}: no {root / task_path / 'task.json'}"
                            " (BIGBENCH_DIR is set, so no other source is tried)")
    return root
  root = shipped_root()
  if not (root / task_path / "task.json").is_file():
    raise DataSourceError(f"BIG-bench task {task_path!r} is not in the package's {ARCHIVE_NAME}"
                          " (set BIGBENCH_DIR to a copy of bigbench/benchmark_tasks that has it)")
  return root


def write_cut_copy(dest: pathlib.Path, per_label: int, role: str = "tune") -> pathlib.Path:
  """A benchmark_tasks copy at `dest` of the catalogue's BIG-bench tasks of `role`, each
  cut to the first `per_label` examples of each gold label (for BIGBENCH_DIR: quick trial
  runs, such as caching the 18 tuning tasks with Beam in seconds).

  Example: per_label 12 -> navigate/task.json with 12 "True" and 12 "False" examples.
  """
  for entry in catalogue.load("bigbench"):
    if entry.role != role:
      continue
    task = {k: v for k, v in read_task(entry.path).items() if k != "_origin"}
    kept, seen = [], {}
    for ex in task["examples"]:
      scores = ex.get("target_scores")
      scores = ast.literal_eval(scores) if isinstance(scores, str) else scores
      label = max(scores, key=scores.get) if scores else json.dumps(ex.get("target"))
      if seen.get(label, 0) < per_label:
        seen[label] = seen.get(label, 0) + 1
        kept.append(ex)
    task["examples"] = kept
    (dest / entry.path).mkdir(parents=True, exist_ok=True)
    (dest / entry.path / "task.json").write_text(json.dumps(task), encoding="utf-8")
  return dest


def task_tar(benchmark_tasks: pathlib.Path) -> tuple[bytes, int]:
  """The wanted task.json files of a benchmark_tasks copy as an uncompressed, reproducible
  tar (sorted members, no owners or times), and how many files it holds."""
  missing = [w for w in wanted_tasks() if not (benchmark_tasks / w).is_dir()]
  if missing:
    raise DataSourceError(f"{benchmark_tasks} lacks the task folders {missing}")
  files = sorted(p for w in wanted_tasks() for p in (benchmark_tasks / w).rglob("task.json"))
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as tar:
    for path in files:
      data = path.read_bytes()
      info = tarfile.TarInfo("benchmark_tasks/" + path.relative_to(benchmark_tasks).as_posix())
      info.size, info.mode = len(data), 0o644
      tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue(), len(files)


def pack(benchmark_tasks: pathlib.Path, out: pathlib.Path) -> int:
  """Writes task_tar(benchmark_tasks) as the tar.xz the package ships; returns the count.
  (The tests compare the shipped archive's tar with task_tar: compressing at preset 9 takes
  a minute, and the same tar compresses to the same bytes.)"""
  data, count = task_tar(benchmark_tasks)
  out.write_bytes(lzma.compress(data, preset=9))
  return count


@functools.cache
def read_task(task_path: str) -> dict:
  path = task_root(task_path) / task_path / "task.json"
  try:
    task = json.loads(path.read_bytes())  # UTF-8 (JSON's encoding); local or gs://
  except json.JSONDecodeError as e:
    raise DataSourceError(f"BIG-bench task {task_path!r}: {path} is not valid JSON: {e}") from None
  task["_origin"] = str(path)
  return task


def instruction_text(task: dict) -> str | None:
  """The task's own instruction: task_prefix, else its example input/output prefixes."""
  prefix = (task.get("task_prefix") or "").strip()
  if prefix:
    return prefix
  parts = [(task.get(k) or "").strip() for k in ("example_input_prefix", "example_output_prefix")]
  joined = " ".join(p for p in parts if len(p) > 3)  # skip bare "Q:" / "A:" markers
  return joined or None


def parse_target_scores(value, where: str) -> dict:
  if isinstance(value, str):
    try:
      value = ast.literal_eval(value)  # literals only: never evaluates code
    except (ValueError, SyntaxError):
      raise DataSourceError(f"{where}, field 'target_scores': not a dict literal: "
                            f"{value[:80]!r}") from None
  if not isinstance(value, dict) or not value or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
    raise DataSourceError(f"{where}, field 'target_scores': expected a non-empty dict of "
                          f"label -> number, got {str(value)[:80]!r}")
  return value


def _records(entry: catalogue.DatasetEntry, task: dict):
  """task.json examples as {input, target_scores: gold key | None for a tie}."""
  classes = set(entry.labels)
  for index, example in enumerate(task.get("examples", [])):
    where = f"dataset {entry.key!r} ({task['_origin']}), example {index}"
    if "target_scores" not in example:
      raise DataSourceError(f"{where}: missing field 'target_scores'")
    scores = parse_target_scores(example["target_scores"], where)
    if set(scores) != classes:
      outside = sorted(set(scores) - classes) or sorted(classes - set(scores))
      raise DataSourceError(f"{where}, field 'target_scores': labels {outside} do not match "
                            f"the class list {list(entry.labels)}")
    best = max(scores.values())
    winners = [k for k, v in scores.items() if v == best]
    yield {"input": example.get("input"), "target_scores": winners[0] if len(winners) == 1
           else "__tie__"}


def split_indices(task_path: str, n: int) -> dict[str, list[int]]:
  order = sorted(range(n), key=lambda i: stable_seed("bigbench-split", task_path, i))
  n_val = min(max(int(n * _VALIDATION_FRACTION), 1), _VALIDATION_MAX)
  return {"validation": sorted(order[:n_val]), "train": sorted(order[n_val:])}


def load_split(entry: catalogue.DatasetEntry, split: str) -> LoadedSplit:
  if split not in SPLITS:
    raise DataSourceError(f"BIG-bench dataset {entry.key!r}: unknown split {split!r}; "
                          f"derived splits are {SPLITS}")
  task = read_task(entry.path)
  records = list(_records(entry, task))
  chosen = split_indices(entry.path, len(records))[split]
  # drop_label_values includes the tie marker so ties are filtered and counted.
  entry_for_split = dataclasses.replace(
      entry, drop_label_values=tuple(entry.drop_label_values) + ("__tie__",))
  loaded = to_examples(entry_for_split, (records[i] for i in chosen), split, task["_origin"],
                       cap=entry.max_examples)
  # Example.index is the position in task.json, not in the split.
  examples = tuple(dataclasses.replace(ex, index=chosen[ex.index])
                   for ex in loaded.examples)
  filtered = {("tied_target_scores" if k == "unlabelled" else k): v
              for k, v in loaded.filtered.items()}
  return LoadedSplit(entry.key, split, examples, loaded.num_records, filtered, loaded.origin)


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] != "pack":
    sys.exit("usage: python -m symbol_tuning.data.sources.bigbench pack BENCHMARK_TASKS_DIR")
  target = settings.assets_dir() / ARCHIVE_NAME
  print(f"wrote {pack(pathlib.Path(sys.argv[2]), target)} task.json files to {target}")
