"""BIG-bench task.json files (JSON task format) as a data source.

Where the files come from, first match wins:
  1. $BIGBENCH_DIR/<task path>/task.json (a copy of bigbench/benchmark_tasks);
  2. the installed `bigbench` package's benchmark_tasks/;
  3. $SYMBOL_TUNING_CACHE/bigbench/ (filled by 4);
  4. a download of the bigbench 1.0.0 sdist from PyPI, extracting only task.json files.

Quirks handled: `target_scores` is a dict or a string holding a Python dict literal; the
gold class is the unique highest score (ties are filtered and counted); there are no
splits, so a fixed hash of (task, example position) puts min(20%, 500) examples into
"validation" and the rest into "train", identically on every machine.
"""
import ast
import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tarfile

from symbol_tuning import catalogue, resources
from symbol_tuning.sources.examples import DataSourceError, LoadedSplit, stable_seed, to_examples

SPLITS = ("train", "validation")
# Generative tasks the evaluation reads besides the catalogued classification tasks.
ALGORITHMIC_TASKS = ("list_functions", "simp_turing_concept")
SDIST = "bigbench==1.0.0"
_VALIDATION_FRACTION = 0.2
_VALIDATION_MAX = 500


def _package_dir() -> pathlib.Path | None:
  spec = importlib.util.find_spec("bigbench")
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "benchmark_tasks"


def _download_into_cache(cache: pathlib.Path) -> None:
  """Fetches the bigbench sdist from PyPI and extracts every task.json into `cache`."""
  download = cache / "_sdist"
  download.mkdir(parents=True, exist_ok=True)
  print(f"BIG-bench: downloading {SDIST} (about 360 MB) into {download}", file=sys.stderr)
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", SDIST, "-d", str(download)]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  archives = sorted(download.glob("bigbench-*.tar.gz"))
  if not archives:
    raise DataSourceError(
        f"BIG-bench: `{' '.join(cmd)}` failed ({result.stderr.strip()[-300:]}); set "
        "BIGBENCH_DIR to a copy of bigbench/benchmark_tasks (README, 'Data sources and local "
        "copies')")
  wanted = [e.path for e in catalogue.load("bigbench")] + list(ALGORITHMIC_TASKS)
  extract_task_files(archives[-1], cache, wanted)
  for archive in archives:  # 360 MB we no longer need
    archive.unlink()


def extract_task_files(archive: pathlib.Path, dest: pathlib.Path,
                       wanted: list[str] | None = None) -> int:
  """Extracts .../benchmark_tasks/<path>/task.json members of an sdist into dest/<path>/,
  only those under one of the `wanted` task paths when given."""
  count = 0
  with tarfile.open(archive) as tar:
    for member in tar:
      parts = pathlib.PurePosixPath(member.name).parts
      if parts[-1] != "task.json" or "benchmark_tasks" not in parts or not member.isfile():
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


def task_root(task_path: str) -> pathlib.Path:
  """The benchmark_tasks directory that holds `task_path` (see module docstring)."""
  env = os.environ.get("BIGBENCH_DIR")
  if env:
    root = pathlib.Path(env).expanduser()
    if not (root / task_path / "task.json").is_file():
      raise DataSourceError(f"BIG-bench task {task_path!r}: no {root / task_path / 'task.json'}"
                            " (BIGBENCH_DIR is set, so no other source is tried)")
    return root
  for root in (_package_dir(), resources.cache_dir() / "bigbench"):
    if root is not None and (root / task_path / "task.json").is_file():
      return root
  cache = resources.cache_dir() / "bigbench"
  _download_into_cache(cache)
  if not (cache / task_path / "task.json").is_file():
    raise DataSourceError(f"BIG-bench task {task_path!r} is not in {SDIST}")
  return cache


@functools.cache
def read_task(task_path: str) -> dict:
  path = task_root(task_path) / task_path / "task.json"
  try:
    with open(path, encoding="utf-8") as f:
      task = json.load(f)
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
