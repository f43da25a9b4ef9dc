"""Running the real t5x binaries (installed by .ci/install_t5x.sh) from tests and benchmarks.

`require_t5x()` skips a test when t5x is not installed, and fails it under CI=true, where
.ci/run installs it. `run_t5x()` runs `python -m t5x.{train,eval}` on our gin files in a
subprocess, offline and on CPU, and returns its log; `train_metrics()` reads the per-step
scalars that t5x.train wrote to TensorBoard.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO / "gin" / "t5x"


def t5x_missing() -> str | None:
  """Why t5x cannot run here, or None."""
  for module in ("t5x", "airio", "jestimator"):
    if importlib.util.find_spec(module) is None:
      return (f"{module} is not installed: run `bash .ci/install_t5x.sh` in the venv "
              "(it installs t5x from ../shared/vendor)")
  return None


def require_t5x() -> None:
  import pytest  # pylint: disable=import-outside-toplevel

  reason = t5x_missing()
  if reason is None:
    return
  if os.environ.get("CI") == "true":
    pytest.fail(f"CI runs the real t5x binaries, but {reason}")
  pytest.skip(reason)


def t5x_env(**extra: str) -> dict:
  """The environment of a t5x subprocess: one CPU device, offline data and vocabulary."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one device, as on a laptop (conftest fakes 8 for sharding)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", SYMBOL_TUNING_VOCAB="local",
             HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
  env.update(extra)
  return env


def run_t5x(binary: str, gin_files, bindings, env: dict | None = None,
            timeout: float = 900) -> str:
  """Runs `python -m t5x.<binary>` from the repo root with `--gin_file`s and `--gin.X=Y`
  bindings (a dict of gin literals); returns the combined output, failing with its tail."""
  cmd = [sys.executable, "-m", f"t5x.{binary}", f"--gin_search_paths={GIN_DIR}"]
  cmd += [f"--gin_file={f}" for f in gin_files]
  cmd += [f"--gin.{name}={value}" for name, value in bindings.items()]
  cmd += ["--alsologtostderr"]
  proc = subprocess.run(cmd, cwd=REPO, env=env or t5x_env(), capture_output=True, text=True,
                        timeout=timeout, check=False)
  log = proc.stdout + proc.stderr
  if proc.returncode != 0:
    raise AssertionError(f"t5x.{binary} exited {proc.returncode}:\n" + log[-6000:])
  return log


def train_metrics(model_dir, tag: str = "loss") -> dict[int, float]:
  """{step: value} of a scalar t5x.train wrote under MODEL_DIR/train (TensorBoard)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

  acc = event_accumulator.EventAccumulator(str(pathlib.Path(model_dir) / "train"),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  if tag not in acc.Tags().get("tensors", []):
    raise AssertionError(f"{model_dir}/train has no scalar {tag!r}; has "
                         f"{sorted(acc.Tags().get('tensors', []))}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
