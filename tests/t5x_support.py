"""Running the real t5x binaries (installed by .ci/install_t5x.sh) from tests and benchmarks.

`require_t5x()` skips a test when t5x is not installed, and fails it under CI=true, where
.ci/run installs it. `run_t5x()` runs `python -m t5x.{train,eval}` on our gin files in a
subprocess, offline and on CPU, and returns its log; `train_metrics()` reads the per-step
scalars that t5x.train wrote to TensorBoard. `compare_trainers()` trains one config with
t5x.train and with `symbol-tuning train` (tests/test_t5x_binaries.py,
benchmarks/trainer_vs_t5x.py); `trainer_commands()` gives their two command lines
(benchmarks/trainer_vs_t5x_hlo.py compiles them).
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from xla_flags import xla_flags

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
  env["XLA_FLAGS"] = xla_flags()  # one device, as on a laptop (conftest fakes 8 for sharding)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", SYMBOL_TUNING_VOCAB="local",
             HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
  env.update(extra)
  return env


def _run(cmd, cwd, env: dict, timeout: float, usage: dict | None):
  """(returncode, stdout, stderr) of `cmd`; its peak resident memory (max RSS, bytes) goes
  to usage["max_rss_bytes"] when `usage` is a dict (os.wait4: this child's own figure)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
      _, status, rusage = os.wait4(proc.pid, 0)
    finally:
      timed_out = timer.finished.is_set()  # set once the timer has fired (killed it)
      timer.cancel()
    if timed_out:
      raise subprocess.TimeoutExpired(cmd, timeout)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if usage is not None:
      usage["max_rss_bytes"] = rusage.ru_maxrss * 1024  # Linux reports KiB
    out.seek(0)
    err.seek(0)
    return proc.returncode, out.read(), err.read()


def probe_gin(cases: dict) -> dict:
  """{name: summary of the configured train()/evaluate(), or {'error': ...}} of gin cases
  {name: (binary, files, bindings)}, finalized by the real t5x in one subprocess
  (tests/t5x_gin_probe.py); the files choose the vocabulary (no SYMBOL_TUNING_VOCAB)."""
  names = list(cases)
  payload = [{"binary": cases[n][0], "files": cases[n][1], "bindings": cases[n][2]}
             for n in names]
  env = t5x_env()
  env.pop("SYMBOL_TUNING_VOCAB")
  proc = subprocess.run([sys.executable, str(REPO / "tests" / "t5x_gin_probe.py"), str(GIN_DIR)],
                        input=json.dumps(payload), capture_output=True, text=True, env=env,
                        timeout=600, check=False)
  line = next((l for l in proc.stdout.splitlines() if l.startswith("PROBE_RESULTS ")), None)
  if proc.returncode != 0 or not line:
    raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
  return dict(zip(names, json.loads(line.split(" ", 1)[1])))


def t5x_command(binary: str, gin_files, bindings) -> list[str]:
  """The command line of `python -m t5x.<binary>` on our gin files, run from the repo root."""
  cmd = [sys.executable, "-m", f"t5x.{binary}", f"--gin_search_paths={GIN_DIR}"]
  cmd += [f"--gin_file={f}" for f in gin_files]
  cmd += [f"--gin.{name}={value}" for name, value in bindings.items()]
  return cmd + ["--alsologtostderr"]


def run_t5x(binary: str, gin_files, bindings, env: dict | None = None,
            timeout: float = 900, usage: dict | None = None) -> str:
  """Runs `python -m t5x.<binary>` from the repo root with `--gin_file`s and `--gin.X=Y`
  bindings (a dict of gin literals); returns the combined output, failing with its tail."""
  cmd = t5x_command(binary, gin_files, bindings)
  returncode, stdout, stderr = _run(cmd, REPO, env or t5x_env(), timeout, usage)
  log = stdout + stderr
  if returncode != 0:
    raise AssertionError(f"t5x.{binary} exited {returncode}:\n" + log[-6000:])
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


def cli_command(*args) -> list[str]:
  return [sys.executable, "-m", "symbol_tuning.cli", *args]


def run_cli(*args, env: dict | None = None, timeout: float = 900,
            usage: dict | None = None) -> str:
  """`symbol-tuning ARGS` in a subprocess (t5x_env by default); returns stdout."""
  returncode, stdout, stderr = _run(cli_command(*args), None, env or t5x_env(), timeout,
                                    usage)
  if returncode != 0:
    raise AssertionError(f"symbol-tuning {' '.join(args)} exited {returncode}:\n"
                         + stdout[-3000:] + stderr[-3000:])
  return stdout


def random_hf_checkpoint(path, size: str, vocab_size: int, seed: int = 0):
  """A random model of `size`'s shape with `vocab_size` ids, saved as a HuggingFace directory
  (config.json + model.safetensors: what users download). Drawn with numpy on the model's
  parameter shapes, T5's initializer scales (norm scales 1, embeddings N(0, 1), kernels
  N(0, 1/fan_in)): compiling the model's init for small's shape took ~35 s."""
  import jax  # pylint: disable=import-outside-toplevel

  from symbol_tuning.checkpoints import hf  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models.registry import get_config, param_shapes  # pylint: disable=import-outside-toplevel

  config = get_config(size, vocab_size=vocab_size)
  rng = np.random.default_rng(seed)

  def draw(key_path, shape):
    name = jax.tree_util.keystr(key_path)
    if "scale" in name:
      return np.ones(shape.shape, shape.dtype)
    std = 1.0 if "embedding" in name else shape.shape[0] ** -0.5
    return (rng.standard_normal(shape.shape, np.float32) * std).astype(shape.dtype)

  hf.save_hf(config, jax.tree_util.tree_map_with_path(draw, param_shapes(config)), path)
  return path


# t5x network fields of our named shapes (the tiny twin's file sets tiny's: 8064 ids, the
# local vocabulary rounded; Flan-T5 small has 32128).
T5X_SHAPES = {"tiny": {"vocab_size": 8064},
              "small": {"vocab_size": 32128, "emb_dim": 512, "num_heads": 6, "head_dim": 64,
                        "mlp_dim": 1024, "num_encoder_layers": 8, "num_decoder_layers": 8}}


def trainer_commands(workdir, init_dir, *, steps: int, size: str, lengths, batch_size: int,
                     activation_dtype: str, t5x_checkpoint_period: int | None = None
                     ) -> dict[str, list[str]]:
  """The command lines of t5x.train ("t5x") and `symbol-tuning train` ("ours") on one config,
  from init_dir/init_t5x/checkpoint_0 and init_dir/init_hf, into workdir/t5x and workdir/ours
  (run them from the repo root, in a t5x_env with BIGBENCH_DIR). t5x checkpoints every
  `t5x_checkpoint_period` steps (default: after the last step only)."""
  workdir, init_dir = pathlib.Path(workdir), pathlib.Path(init_dir)
  feature_lengths = f"{{'inputs': {lengths[0]}, 'targets': {lengths[1]}}}"
  shape = {f"network.T5Config.{k}": v for k, v in T5X_SHAPES[size].items()}
  t5x = t5x_command("train", ["symbol_tuning_bigbench_tiny.gin"], {
      "MODEL_DIR": f"'{workdir / 't5x'}'",
      "FLAN_T5_CHECKPOINT": f"'{init_dir / 'init_t5x' / 'checkpoint_0'}'",
      "FINETUNE_STEPS": steps, "BATCH_SIZE": batch_size, "TASK_FEATURE_LENGTHS": feature_lengths,
      # A metrics record every step, a checkpoint after the last only, as ours (t5x saves in
      # a background thread: a checkpoint every step would compete with the next steps for
      # the CPU and inflate t5x's step times); the stream's seed fixed, as ours is.
      "__main__.train.stats_period": 1,
      "utils.SaveCheckpointConfig.period": t5x_checkpoint_period or steps,
      "train/utils.DatasetConfig.seed": 0,
      "network.T5Config.dtype": f"'{activation_dtype}'", **shape})
  ours = cli_command(
      "train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
      f"--gin.MODEL_DIR='{workdir / 'ours'}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{init_dir / 'init_hf'}'", f"--gin.TRAIN_STEPS={steps}",
      f"--gin.BATCH_SIZE={batch_size}", f"--gin.TASK_FEATURE_LENGTHS={feature_lengths}",
      "--gin.LOG_PERIOD=1", f"--gin.CHECKPOINT_PERIOD={steps}", "--gin.RANDOM_SEED=0",
      f"--gin.ACTIVATION_DTYPE='{activation_dtype}'", "--no_progress")
  return {"t5x": t5x, "ours": ours}


def compare_trainers(workdir, bigbench_dir, *, steps: int = 3, size: str = "tiny",
                     lengths=(512, 32), batch_size: int = 8,
                     activation_dtype: str = "float32", init_dir=None,
                     t5x_checkpoint_period: int | None = None) -> dict:
  """Trains the same config with t5x.train and with our trainer, one after the other: the
  same initial checkpoint (random, `size`'s shape, written as HF and converted to t5x at
  step 0, under `init_dir` (default: workdir), reused if already there), the same seqio
  batches (symbol_tuning_bigbench, seed 0, `lengths`, best-fit packing), dropout 0 (t5x
  checkpointing every `t5x_checkpoint_period` steps, default after the last). Returns
  both per-step losses (per target token), seconds per step, peak resident memory (max RSS
  of each trainer's process), the largest difference of the final parameters, and the run
  directories."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from symbol_tuning.checkpoints import convert, flatten  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  init_dir = pathlib.Path(init_dir or workdir)
  env = t5x_env(BIGBENCH_DIR=str(bigbench_dir))
  hf_dir, t5x_init = init_dir / "init_hf", init_dir / "init_t5x"
  if not (t5x_init / "checkpoint_0").exists():
    random_hf_checkpoint(hf_dir, size, T5X_SHAPES[size]["vocab_size"])
    run_cli("convert", str(hf_dir), str(t5x_init), "--to", "t5x", "--step", "0", env=env)
  t5x_dir, ours_dir = workdir / "t5x", workdir / "ours"
  commands = trainer_commands(workdir, init_dir, steps=steps, size=size, lengths=lengths,
                              batch_size=batch_size, activation_dtype=activation_dtype,
                              t5x_checkpoint_period=t5x_checkpoint_period)
  t5x_usage, ours_usage = {}, {}
  for name, usage in (("t5x", t5x_usage), ("ours", ours_usage)):
    returncode, stdout, stderr = _run(commands[name], REPO, env, 900, usage)
    if returncode != 0:
      raise AssertionError(f"{name} ({' '.join(commands[name][1:4])}) exited {returncode}:\n"
                           + (stdout + stderr)[-6000:])
  rows = [json.loads(line) for line in (ours_dir / "metrics.jsonl").read_text().splitlines()]
  theirs = train_metrics(t5x_dir, "loss_per_nonpadding_target_token")
  seconds = train_metrics(t5x_dir, "timing/seconds")
  _, ours_params = convert.load_any(str(ours_dir))
  _, t5x_params = convert.load_any(str(t5x_dir / f"checkpoint_{steps}"))
  _, init_params = convert.load_any(str(hf_dir))
  ours_flat, t5x_flat, init_flat = (flatten(p) for p in (ours_params, t5x_params, init_params))
  return {
      "t5x_dir": str(t5x_dir), "ours_dir": str(ours_dir), "init_hf": str(hf_dir),
      "steps": [r["step"] for r in rows],
      "ours_loss": [r["loss"] for r in rows],
      "t5x_loss": [theirs[r["step"]] for r in rows],
      "ours_seconds_per_step": [r["seconds_per_step"] for r in rows],
      "t5x_seconds_per_step": [seconds[r["step"]] for r in rows],
      "ours_max_rss_bytes": ours_usage["max_rss_bytes"],
      "t5x_max_rss_bytes": t5x_usage["max_rss_bytes"],
      "max_abs_param_diff": max(float(np.max(np.abs(ours_flat[k] - t5x_flat[k])))
                                for k in ours_flat),
      "max_abs_param_change": max(float(np.max(np.abs(ours_flat[k] - init_flat[k])))
                                  for k in ours_flat),
  }
