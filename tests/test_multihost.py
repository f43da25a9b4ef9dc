"""Multi-host training: two processes on localhost (CPU devices, gloo collectives).

Each process runs `symbol-tuning train` as a host of a 2-host job: it joins through
jax.distributed (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), reads its own
shard of the data and feeds its half of every global batch. The job writes each checkpoint
once, both processes restore it, and the final parameters equal those of one process
trained on the same global batches (both shards' host batches, concatenated). The first
steps with MODEL_DIR on a shared local disk, the rest resumed from GCS (a server on
localhost) with each process in its own folder, as on a TPU VM slice.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import gin
import jax
import numpy as np
import pytest

from gcs_support import gcs  # noqa: F401  (the emulator fixture)
from symbol_tuning.checkpoints import convert
from symbol_tuning import paths
from symbol_tuning.training import data, partitioning
from symbol_tuning.training import trainer as trainer_lib
from xla_flags import xla_flags

TASK = "symbol_tuning.bigbench.navigate"
LENGTHS = {"inputs": 256, "targets": 16}
HOSTS, DEVICES_PER_HOST, BATCH = 2, 2, 8


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_on_two_hosts(model_dir, steps: int, timeout: float = 600, cwds=None) -> list[str]:
  """Runs the train command as process 0 and 1 of a 2-host job (in folders `cwds`, if
  given: one per host); returns their stderr."""
  port = _free_port()
  cmd = [sys.executable, "-m", "symbol_tuning.cli", "train",
         "--gin_file=local/symbol_tuning_bigbench_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
         f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.TRAIN_STEPS={steps}",
         f"--gin.BATCH_SIZE={BATCH}", "--gin.CHECKPOINT_PERIOD=2", "--gin.LOG_PERIOD=1",
         f"--gin.MESH_MODEL={DEVICES_PER_HOST}", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
         "--no_progress"]
  procs = []
  for process_id in range(HOSTS):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS=xla_flags(DEVICES_PER_HOST),
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(HOSTS),
               JAX_PROCESS_ID=str(process_id))
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True,
                                  cwd=cwds[process_id] if cwds else None))
  errs = []
  try:
    for proc in procs:
      errs.append(proc.communicate(timeout=timeout)[1])
  finally:
    for proc in procs:  # one host failing leaves the other waiting for it
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for i, (proc, err) in enumerate(zip(procs, errs)):
    assert proc.returncode == 0, f"process {i} (exit {proc.returncode}):\n{err[-3000:]}"
  return errs


def _one_process_on_the_same_global_batches(model_dir, steps):
  """(per-step losses, final state): one process, each global batch being host 0's then
  host 1's batch of the 2-host job; the same mesh shape and initialisation."""
  gin.clear_config()
  cfg = trainer_lib.TrainConfig(
      model_dir=str(model_dir), mixture_or_task_name=TASK, train_steps=steps,
      task_feature_lengths=LENGTHS, batch_size=BATCH, model_size="tiny", vocabulary="local",
      dropout_rate=0.0, learning_rate=0.003, mesh_model=DEVICES_PER_HOST)
  trainer = trainer_lib.Trainer(cfg, devices=jax.devices()[:HOSTS * DEVICES_PER_HOST])
  shards = [data.host_batches(trainer.data_cfg, host=i, hosts=HOSTS) for i in range(HOSTS)]
  losses = []
  for _ in range(steps):
    parts = [next(shard) for shard in shards]
    # The hosts read different examples (else the test could not tell sharding apart).
    assert not np.array_equal(parts[0]["encoder_input_tokens"], parts[1]["encoder_input_tokens"])
    metrics = trainer.step({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    losses.append(float(jax.device_get(metrics["loss"])))
  return losses, jax.tree.map(np.asarray, jax.device_get(trainer.state))


def test_two_hosts_train_like_one_process_and_resume_on_gcs(gcs, tmp_path, bigbench_dir):
  """Steps 1-2 with MODEL_DIR on a disk both processes share; then, the run copied to GCS,
  steps 3-4 with each host in its own empty folder and MODEL_DIR on GCS only (as on a TPU VM
  slice): both hosts restore gs://.../checkpoint_2 and write checkpoint_4 there."""
  assert len(jax.devices()) >= HOSTS * DEVICES_PER_HOST, "conftest asks XLA for 8 CPU devices"
  local = tmp_path / "run"
  first = _train_on_two_hosts(local, steps=2)  # writes checkpoint_2
  # Written once: one directory per checkpoint, complete; metrics and config from the chief.
  assert sorted(p.name for p in local.iterdir()) == [
      "checkpoint_2", "config.gin", "metrics.jsonl", "train"]
  assert (local / "checkpoint_2" / "commit_success.txt").is_file()
  # Each host wrote its part of the state.
  stored = local / "checkpoint_2" / "state"
  assert all(any((stored / f"ocdbt.process_{i}").rglob("*")) for i in range(HOSTS))

  run = "gs://bkt/run"
  paths.upload_dir(str(local), run)
  cwds = [tmp_path / f"host_{i}" for i in range(HOSTS)]
  for cwd in cwds:
    cwd.mkdir()
  second = _train_on_two_hosts(run, steps=4, cwds=cwds)  # both restore gs://.../checkpoint_2
  # Only the chief reports progress; each host says where it stopped.
  for errs in (first, second):
    assert ["step 1/" in e or "step 3/" in e for e in errs] == [True, False], errs[1][-2000:]
  assert all("trained to step 4" in e for e in second)
  names = gcs.objects("bkt", "run/")
  for step in (2, 4):  # written once, complete, each host's data position in it
    assert f"run/checkpoint_{step}/commit_success.txt" in names
    for i in range(HOSTS):
      assert any(n.startswith(f"run/checkpoint_{step}/data/host_{i}.") for n in names)
  assert len([n for n in names if n.startswith("run/train/events.out.tfevents.")]) == 2
  assert all(not any(cwd.iterdir()) for cwd in cwds)  # nothing written locally
  rows = [json.loads(line) for line in
          (paths.path(run) / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]

  losses, state = _one_process_on_the_same_global_batches(tmp_path / "ref", steps=4)
  # Nothing written twice: the stored (compressed) bytes stay below one raw copy of the state.
  raw = sum(x.nbytes for x in jax.tree.leaves(state))
  written = sum(p.stat().st_size for p in stored.rglob("*") if p.is_file())
  assert written < raw, (written, raw)
  _assert_like_one_process(rows, losses, state["params"], run)


def _assert_like_one_process(rows, losses, want, run):
  np.testing.assert_allclose([r["loss"] for r in rows], losses, rtol=1e-5)
  _, got = convert.load_any(str(run))
  worst = 0.0
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(want),
                               jax.tree_util.tree_leaves_with_path(got)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    worst = max(worst, float(np.abs(a - b).max()))
  print(f"max |2 hosts - 1 process| over the final params: {worst:.3g}")


def test_model_axis_across_hosts_is_refused():
  # Host 0 owns devices 0-1, host 1 devices 2-3; a model axis of 4 would put one data
  # index on both hosts, which cannot each feed "their" rows of the batch.
  devices = np.array([types.SimpleNamespace(process_index=i // 2) for i in range(4)])
  mesh = types.SimpleNamespace(shape={"data": 1, "model": 4}, devices=devices.reshape(1, 4))
  with pytest.raises(partitioning.MeshError, match=r"model axis \(4\) spans hosts \[0, 1\]"):
    partitioning.check_batch(8, mesh)
  partitioning.check_batch(8, types.SimpleNamespace(shape={"data": 2, "model": 2},
                                                    devices=devices.reshape(2, 2)))
