"""What the embedded trainer's tests share across the T5 (test_trainer.py) and decoder-only
(test_decoder_trainer.py) models: a small config, one step on a fresh trainer, and the
checks that hold for both families."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from symbol_tuning import cli, paths
from symbol_tuning.checkpoints import convert
from symbol_tuning.training import data
from symbol_tuning.training import trainer as trainer_lib
from xla_flags import xla_flags

TASK = "symbol_tuning.bigbench.navigate"
T5_TINY = dict(task_feature_lengths={"inputs": 512, "targets": 16}, model_size="tiny")
LLAMA_TINY = dict(task_feature_lengths=272, model_size="llama-tiny")  # one length: prompt + answer


def small_config(model_dir, **kw) -> trainer_lib.TrainConfig:
  """4 steps of batch 8 on TASK, no dropout; pass T5_TINY or LLAMA_TINY (or overrides)."""
  values = dict(model_dir=str(model_dir), mixture_or_task_name=TASK, train_steps=4,
                batch_size=8, vocabulary="local", dropout_rate=0.0, checkpoint_period=2,
                log_period=1)
  values.update(kw)
  return trainer_lib.TrainConfig(**values)


def one_step(cfg, devices, host_params=None):
  """(metrics, params after the step) of one step of a fresh trainer, optionally starting
  from `host_params`."""
  trainer = trainer_lib.Trainer(cfg, devices=devices)
  if host_params is not None:
    trainer.state = trainer._initial_state(host_params)  # pylint: disable=protected-access
  batch = next(data.host_batches(trainer.data_cfg))
  metrics = trainer.step(batch)
  params = jax.tree.map(np.asarray, jax.device_get(trainer.state["params"]))
  return {k: float(v) for k, v in jax.device_get(metrics).items()}, params


def metrics_rows(model_dir) -> list[dict]:
  return [json.loads(l) for l in (paths.path(model_dir) / "metrics.jsonl").read_text()
          .splitlines()]


def cli_train(model_dir, capsys, gin_file: str, lengths: str, checkpoint_period: int):
  """`symbol-tuning train` of 16 steps of batch 8 on TASK, a metrics row per step:
  (its stderr, the metrics rows), after checking it succeeded and logged every step."""
  code = cli.main(["train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{model_dir}'",
                   f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", "--gin.TRAIN_STEPS=16",
                   "--gin.BATCH_SIZE=8", f"--gin.CHECKPOINT_PERIOD={checkpoint_period}",
                   "--gin.LOG_PERIOD=1", f"--gin.TASK_FEATURE_LENGTHS={lengths}",
                   "--no_progress"])
  err = capsys.readouterr().err
  assert code == 0, err
  rows = metrics_rows(model_dir)
  assert [r["step"] for r in rows] == list(range(1, 17))
  return err, rows


def assert_loss_goes_down(rows, by: float):
  first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
  assert last < first - by, (first, last)


def assert_sharded_step_equals_single_device(model_dir: pathlib.Path, model: dict):
  """One step on a 4x2 mesh (data x model) gives the single-device loss and params."""
  assert len(jax.devices()) == 8, "conftest asks XLA for 8 CPU devices"
  cfg1 = small_config(model_dir / "a", mesh_data=1, mesh_model=1, **model)
  single_metrics, single_params = one_step(cfg1, jax.devices()[:1])
  init = jax.tree.map(np.asarray, jax.device_get(
      trainer_lib.Trainer(cfg1, devices=jax.devices()[:1]).state["params"]))
  cfg8 = small_config(model_dir / "b", mesh_data=4, mesh_model=2, **model)
  sharded_metrics, sharded_params = one_step(cfg8, jax.devices(), init)
  assert sharded_metrics["loss"] == pytest.approx(single_metrics["loss"], rel=1e-6)
  assert sharded_metrics["target_tokens"] == single_metrics["target_tokens"]
  for a, b in zip(jax.tree.leaves(single_params), jax.tree.leaves(sharded_params)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def assert_accumulation_matches_one_big_batch(model_dir: pathlib.Path, model: dict):
  """4 microbatches give the loss and params of the whole batch at once."""
  devices = jax.devices()[:1]
  base = dict(mesh_data=1, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS", **model)
  m1, p1 = one_step(small_config(model_dir / "a", **base), devices)
  m4, p4 = one_step(small_config(model_dir / "b", num_microbatches=4, **base), devices)
  assert m4["loss"] == pytest.approx(m1["loss"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def assert_same_checkpoint(want_dir, got_dir):
  """The newest checkpoints of two run directories hold the same params, bit for bit."""
  _, want = convert.load_any(str(want_dir))
  _, got = convert.load_any(str(got_dir))
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(want),
                               jax.tree_util.tree_leaves_with_path(got)):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


# Exact-resume runs: `symbol-tuning train` in a subprocess, SIGKILLed on a condition.
STEPS = 12
# (gin file, TASK_FEATURE_LENGTHS) of the tiny T5 and the tiny decoder-only model.
KILL_CONFIGS = {
    "t5": ("local/symbol_tuning_bigbench_tiny.gin", "{'inputs': 512, 'targets': 16}"),
    "decoder_only": ("local/symbol_tuning_bigbench_llama_tiny.gin", "{'targets': 528}"),
}


def train_cmd(model_dir, kind="t5"):
  gin_file, lengths = KILL_CONFIGS[kind]
  return [sys.executable, "-m", "symbol_tuning.cli", "train", f"--gin_file={gin_file}",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          f"--gin.TRAIN_STEPS={STEPS}", "--gin.BATCH_SIZE=4", "--gin.CHECKPOINT_PERIOD=3",
          "--gin.LOG_PERIOD=1", "--gin.DROPOUT_RATE=0.1",
          f"--gin.TASK_FEATURE_LENGTHS={lengths}", "--no_progress"]


def subprocess_env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags()  # one CPU device: the batch of 4 need not divide by 8
  return env


def logged_steps(model_dir):
  path = paths.path(model_dir) / "metrics.jsonl"  # a local folder or gs://
  if not path.exists():
    return 0
  lines = [l for l in path.read_text().splitlines() if l.strip()]
  try:
    return json.loads(lines[-1])["step"] if lines else 0
  except json.JSONDecodeError:  # a line being written
    return 0


def run_and_kill(model_dir, when, kind, timeout=240, poll_s=0.002):
  """Starts training and SIGKILLs it as soon as `when(model_dir)` is true, asked every
  `poll_s` seconds. A check that lists gs:// costs ~3 ms of client and server CPU: give it
  poll_s=0.02, or the checks take most of a core from the run they watch (2 cores here)."""
  proc = subprocess.Popen(train_cmd(model_dir, kind), env=subprocess_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if when(model_dir):
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(poll_s)
  proc.wait()
  return False
