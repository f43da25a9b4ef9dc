"""Shared helpers for the benchmark scripts: environment, machine description, JSON output."""
import json
import os
import pathlib
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("SYMBOL_TUNING_VOCAB", "local")

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def setup_bigbench() -> None:
  """BIGBENCH_DIR defaults to the workspace's shared copy when it exists."""
  from symbol_tuning import resources  # pylint: disable=g-import-not-at-top

  shared = resources.shared_dir() / "data" / "bigbench"
  if "BIGBENCH_DIR" not in os.environ and shared.is_dir():
    os.environ["BIGBENCH_DIR"] = str(shared)
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.ERROR)


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}


def write(name: str, figures: dict) -> pathlib.Path:
  RESULTS_DIR.mkdir(exist_ok=True)
  path = RESULTS_DIR / f"{name}.json"
  path.write_text(json.dumps({"benchmark": name, "machine": machine(), **figures}, indent=1))
  print(f"wrote {path}")
  return path
