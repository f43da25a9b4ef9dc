"""Where the project's files and data live, and the environment variables that move them.

Environment variables (all optional):
  SYMBOL_TUNING_DATA_DIR  local copies of HF datasets: <dir>/<key>/ (README, "Data sources
                          and local copies").
  BIGBENCH_DIR            a directory laid out as BIG-bench's `bigbench/benchmark_tasks`
                          (else the package's archive, sources/bigbench.py).
  SYMBOL_TUNING_CACHE     where extracted and downloaded files go (~/.cache/symbol_tuning).
  SYMBOL_TUNING_SHARED    the workspace's shared/ folder (tests and benchmarks only).
  SYMBOL_TUNING_STORAGE_TIMEOUT  seconds a gs:// MODEL_DIR may take to answer (default 60).
  SYMBOL_TUNING_CACHE_LENGTHS    the lengths `symbol_tuning.data.cached_tasks` registers
                          cached twins at: INPUTS:TARGETS pairs, comma-separated (default
                          2048:512,512:32, the shipped t5x gin files' lengths).
"""
import os
import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _packaged_or_repo(name: str) -> pathlib.Path:
  """gin/ and tasks/ sit at the repo top; a wheel carries them in symbol_tuning/_data/."""
  packaged = PACKAGE_DIR / "_data" / name
  return packaged if packaged.is_dir() else REPO_DIR / name


def catalogue_dir() -> pathlib.Path:
  return _packaged_or_repo("tasks")


def gin_dir() -> pathlib.Path:
  return _packaged_or_repo("gin")


def assets_dir() -> pathlib.Path:
  return PACKAGE_DIR / "assets"


def data_dir() -> pathlib.Path | None:
  value = os.environ.get("SYMBOL_TUNING_DATA_DIR")
  return pathlib.Path(value).expanduser() if value else None


def cache_dir() -> pathlib.Path:
  value = os.environ.get("SYMBOL_TUNING_CACHE", "~/.cache/symbol_tuning")
  return pathlib.Path(value).expanduser()


def shared_dir() -> pathlib.Path:
  """The workspace's shared/ folder: $SYMBOL_TUNING_SHARED, else ../shared beside the repo."""
  value = os.environ.get("SYMBOL_TUNING_SHARED")
  return pathlib.Path(value).expanduser() if value else REPO_DIR.parent / "shared"


def storage_timeout() -> float:
  """Seconds the first touch of a gs:// folder may take before it is called unreachable."""
  return float(os.environ.get("SYMBOL_TUNING_STORAGE_TIMEOUT", "60"))


def cache_lengths() -> list[dict[str, int]]:
  """$SYMBOL_TUNING_CACHE_LENGTHS as sequence lengths: "2048:512,512:32" ->
  [{"inputs": 2048, "targets": 512}, {"inputs": 512, "targets": 32}]."""
  value = os.environ.get("SYMBOL_TUNING_CACHE_LENGTHS", "2048:512,512:32")
  lengths = []
  for part in value.split(","):
    inputs, _, targets = part.strip().partition(":")
    if not (inputs.isdigit() and targets.isdigit() and int(inputs) and int(targets)):
      raise ValueError(f"SYMBOL_TUNING_CACHE_LENGTHS={value!r}: {part.strip()!r} is not "
                       "INPUTS:TARGETS (two positive integers, e.g. 2048:512)")
    lengths.append({"inputs": int(inputs), "targets": int(targets)})
  return lengths
