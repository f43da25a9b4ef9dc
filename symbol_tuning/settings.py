"""Where the project's files and data live, and the environment variables that move them.

Environment variables (all optional):
  SYMBOL_TUNING_DATA_DIR  local copies of HF datasets: <dir>/<key>/ (README, "Data sources
                          and local copies"); a folder or a gs:// URL.
  BIGBENCH_DIR            a directory laid out as BIG-bench's `bigbench/benchmark_tasks`
                          (else the package's archive, sources/bigbench.py); a folder or a
                          gs:// URL.
  SYMBOL_TUNING_CACHE     where extracted and downloaded files go (~/.cache/symbol_tuning).
  SYMBOL_TUNING_SHARED    the workspace's shared/ folder (tests and benchmarks only).
  SYMBOL_TUNING_STORAGE_TIMEOUT  seconds a gs:// path (MODEL_DIR, data copies, BIG-bench,
                          vocabulary, --out) may take to answer (default 60).
"""
import os
import pathlib

from etils import epath

from symbol_tuning import paths

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


def data_dir() -> epath.Path | None:
  """$SYMBOL_TUNING_DATA_DIR: a local folder (made absolute) or gs://bucket/folder."""
  value = os.environ.get("SYMBOL_TUNING_DATA_DIR")
  return paths.path(value) if value else None


def bigbench_dir() -> epath.Path | None:
  """$BIGBENCH_DIR: a local folder (made absolute) or gs://bucket/folder."""
  value = os.environ.get("BIGBENCH_DIR")
  return paths.path(value) if value else None


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
