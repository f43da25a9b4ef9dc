"""gs:// paths against a GCS server on localhost (tests/gcs_support.py): train with MODEL_DIR
on GCS, checkpoint, SIGKILL, resume bit-exact, convert, evaluate; t5x checkpoints, gin files
and a vocabulary on gs://; the server stopped mid-save; a missing bucket and missing
credentials are one line, not a traceback or a hang."""
import json
import os
import subprocess
import time

import jax
import numpy as np
import pytest
import seqio

import readme_support
import trainer_support
from gcs_support import gcs  # noqa: F401  (the emulator fixture)
from symbol_tuning import cli, paths, settings
from symbol_tuning.data import vocab
from symbol_tuning.checkpoints import convert
from symbol_tuning.evaluation import report
from symbol_tuning.models import registry as family
from trainer_support import STEPS, logged_steps, run_and_kill, subprocess_env, train_cmd

pytestmark = pytest.mark.usefixtures("clean_gin")

RUN = "gs://bkt/run"
# Seconds between checks of the server while a run is watched. Each check lists gs://; at
# 2 ms they took ~0.7 of a core (this process and the server) from the run they watch. A
# save of the tiny T5 stayed uncommitted 0.56-0.76 s here, a window 20 ms checks still find.
POLL_S = 0.02


def _steps(emulator, complete: bool) -> set[int]:
  """checkpoint_<step> folders of RUN on the server: with commit_success.txt (complete) or
  without it (being written: on GCS orbax writes in place and commits last)."""
  names = emulator.objects("bkt", "run/")
  steps = {int(n.split("/")[1].split("_")[1]) for n in names
           if n.split("/")[1].startswith("checkpoint_") and n.split("/")[1][11:].isdigit()}
  committed = {s for s in steps if f"run/checkpoint_{s}/commit_success.txt" in names}
  return committed if complete else steps - committed


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bigbench_dir):
  """What the interrupted runs on gs:// must end as: the same run, uninterrupted, on a local
  disk (trained once for this module's tests; conftest keeps them on one worker)."""
  del bigbench_dir
  ref = tmp_path_factory.mktemp("gcs_reference") / "ref"
  done = subprocess.run(train_cmd(ref), env=subprocess_env(), capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return ref


def test_train_kill_resume_convert_on_gcs(gcs, tmp_path, reference):
  # Killed while a checkpoint is being written, then between checkpoints.
  assert run_and_kill(RUN, lambda d: bool(_steps(gcs, complete=False)), "t5", poll_s=POLL_S)
  assert run_and_kill(RUN, lambda d: logged_steps(d) >= 8, "t5", poll_s=POLL_S)
  # The last run stages its TensorBoard events in its own temporary folder: removed at the end.
  staging = tmp_path / "tmp"
  staging.mkdir()
  done = subprocess.run(train_cmd(RUN), env={**subprocess_env(), "TMPDIR": str(staging)},
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert not list(staging.glob("symbol_tuning_tb_*"))
  trainer_support.assert_same_checkpoint(reference, RUN)
  assert [r["step"] for r in trainer_support.metrics_rows(RUN)] == list(range(1, STEPS + 1))
  # Everything on the server, nothing in a local ./gs: folder.
  names = gcs.objects("bkt", "run/")
  assert "run/config.gin" in names
  assert any(n.startswith("run/train/events.out.tfevents.") for n in names)
  assert any(n.startswith(f"run/checkpoint_{STEPS}/data/host_0.") for n in names)
  assert not os.path.exists("gs:")
  # README's block (Cloud TPU, gs:// paths): its train command is this test's (plus tiny
  # settings), and its eval and convert commands run as written with $RUN on the server.
  readme = [c.replace("${RUN}", RUN).replace("$RUN", RUN)
            for c in readme_support.block("Cloud TPU", 1).commands[1:]]
  assert [c.split()[1] for c in readme] == ["train", "eval", "convert"]
  train_argv = readme_support.cli_argv(readme[0])
  assert set(train_argv) - {"--gin.TRAIN_STEPS=12"} <= set(train_cmd(RUN)[3:])
  assert cli.main(readme_support.cli_argv(readme[1]) + [
      "--max_examples", "1", "--input_length", "512", "--settings", "labels",
      "--no_progress"]) == 0
  assert gcs.objects("bkt", "run/eval/")
  assert cli.main(readme_support.cli_argv(readme[2])) == 0
  trainer_support.assert_same_checkpoint(RUN, f"{RUN}_hf")
  # Convert the gs:// run to HF files and to a native checkpoint, both on gs://.
  for dst, fmt in (("gs://bkt/hf", "hf"), ("gs://bkt/native", "native")):
    convert.convert(RUN, dst, fmt)
    trainer_support.assert_same_checkpoint(RUN, dst)
  # Evaluate it, and compare two evaluations, outputs on gs:// too.
  for out in ("gs://bkt/eval_a", "gs://bkt/eval_b"):
    assert cli.main(["eval", "--checkpoint", RUN, "--suite", "bigbench", "--max_examples", "2",
                     "--input_length", "512", "--settings", "labels", "--no_progress",
                     "--out", out]) == 0
  assert cli.main(["compare", "gs://bkt/eval_a", "gs://bkt/eval_b", "--out", "gs://bkt/cmp"]) == 0
  results = json.loads(paths.path("gs://bkt/eval_a/results.json").read_text())
  assert results["num_examples"] > 0
  assert gcs.objects("bkt", "eval_a/") == [f"eval_a/{n}" for n in sorted(report.RUN_FILES)]
  assert gcs.objects("bkt", "cmp/") == [
      f"cmp/{n}" for n in ("compare.json", "compare.md", "settings.png", "tasks.png")]


def test_server_stopped_mid_save_loses_nothing(gcs, reference):
  proc = subprocess.Popen(train_cmd(RUN), env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not (_steps(gcs, complete=False) and _steps(gcs, complete=True)):
    assert time.time() < deadline and proc.poll() is None, "no second checkpoint was started"
    time.sleep(POLL_S)
  gcs.stop()  # mid-save of the second (or a later) checkpoint
  time.sleep(3)
  gcs.start()
  _, err = proc.communicate(timeout=300)
  # The clients retry through a short outage; a run that gave up said so in a line and is
  # resumed here from the last complete checkpoint.
  print(f"server stopped mid-save: exit {proc.returncode}, {err.strip().splitlines()[-1]}")
  if proc.returncode != 0:
    assert "Traceback" not in err, err[-2000:]
    done = subprocess.run(train_cmd(RUN), env=subprocess_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
  trainer_support.assert_same_checkpoint(reference, RUN)
  for step in sorted(_steps(gcs, complete=True)):
    convert.load_any(f"{RUN}/checkpoint_{step}")  # every committed checkpoint reads back
  assert not _steps(gcs, complete=False)


def _train_error(env, model_dir, timeout=180) -> tuple[int, str, float]:
  """(exit code, the last stderr line, seconds) of a run that fails; its stderr holds no
  traceback (TensorFlow's start-up log lines come first)."""
  start = time.time()
  proc = subprocess.run(train_cmd(model_dir), env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return proc.returncode, proc.stderr.strip().splitlines()[-1], time.time() - start


def test_missing_bucket_is_one_line(gcs, bigbench_dir):
  code, err, _ = _train_error(subprocess_env(), "gs://no-such-bucket/run")
  assert code == 2
  assert err.startswith("symbol-tuning train: error: MODEL_DIR gs://no-such-bucket/run: cannot "
                        "be written"), err
  assert "gs://no-such-bucket does not exist" in err
  assert gcs.objects("bkt") == []


def test_no_credentials_is_one_line_within_the_probe_time(tmp_path, bigbench_dir):
  env = {k: v for k, v in subprocess_env().items()
         if not k.startswith(("STORAGE_EMULATOR", "TENSORSTORE_GCS", "GOOGLE_"))}
  env.update(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"),
             EPATH_USE_TF="false", SYMBOL_TUNING_STORAGE_TIMEOUT="5")
  code, err, took = _train_error(env, "gs://bkt/run")
  assert code == 2
  assert err.startswith("symbol-tuning train: error: MODEL_DIR gs://bkt/run: "), err
  assert took < 60, took
  print(f"no credentials: {took:.1f} s, {err}")


def test_one_path_type(monkeypatch, tmp_path):
  assert os.fspath(paths.path("gs://b/run")) == "gs://b/run"  # not ./gs:/b/run
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.path("run")) == os.fspath(tmp_path / "run")
  assert paths.is_remote("gs://b") and not paths.is_remote(tmp_path)


def test_vocabulary_on_gcs(gcs, monkeypatch, tmp_path):
  monkeypatch.setenv("SYMBOL_TUNING_CACHE", str(tmp_path / "cache"))
  local = settings.assets_dir() / vocab.LOCAL_VOCAB
  paths.path("gs://bkt/vocab/spm.model").write_bytes(local.read_bytes())
  text = "Input: 3 apples and 4 pears\nOutput: foo"
  try:
    vocab.set_vocabulary("gs://bkt/vocab/spm.model")
    assert vocab.resolve().vocab_size == 8000
    assert vocab.resolve().encode(text) == seqio.SentencePieceVocabulary(str(local)).encode(text)
    vocab.set_vocabulary("gs://bkt/vocab/missing.model")
    with pytest.raises(vocab.VocabularyError, match=r"^vocabulary 'gs://bkt/vocab/missing.model' "
                       r"cannot be read \(FileNotFoundError.*; pass --vocab local"):
      vocab.resolve()
  finally:
    vocab.set_vocabulary(None)


def test_t5x_checkpoints_on_gcs(gcs, tmp_path):
  """A t5x checkpoint (msgpack + zarr arrays, as the public Flan-T5 ones) read where it lies
  on gs://, and written there by convert."""
  config = family.get_config("tiny", vocab_size=256)
  params = jax.tree.map(np.asarray, family.init_params(config, jax.random.PRNGKey(0)))
  local = convert.save_any(config, params, str(tmp_path / "t5x"), "t5x", step=7)
  paths.upload_dir(str(tmp_path / "t5x"), "gs://bkt/t5x")
  assert "t5x/checkpoint_7/checkpoint" in gcs.objects("bkt", "t5x/")
  for source in ("gs://bkt/t5x", "gs://bkt/t5x/checkpoint_7"):
    assert convert.detect_format(source) == "t5x"
    trainer_support.assert_same_checkpoint(local, source)
  written = convert.convert("gs://bkt/t5x", "gs://bkt/t5x_again", "t5x")
  assert written == "gs://bkt/t5x_again/checkpoint_7"
  trainer_support.assert_same_checkpoint(local, written)


def test_gin_files_on_gcs(gcs, monkeypatch):
  """--gin_file gs://... (and a gs:// search path for its includes)."""
  import gin  # pylint: disable=import-outside-toplevel

  # gin keeps search paths for the whole process and has no public way to drop one: without
  # this, a later test in the same worker looked for its gin files on gs://bkt/gin too (with
  # the emulator gone: a DNS lookup of www.googleapis.com).
  monkeypatch.setattr(gin.config, "_LOCATION_PREFIXES", list(gin.config._LOCATION_PREFIXES))  # pylint: disable=protected-access
  from symbol_tuning.commands import train  # pylint: disable=import-outside-toplevel

  paths.path("gs://bkt/gin/steps.gin").write_text("TRAIN_STEPS = 7\n")
  paths.path("gs://bkt/gin/run.gin").write_text(
      "include 'local/symbol_tuning_bigbench_tiny.gin'\ninclude 'steps.gin'\n"
      "MODEL_DIR = 'gs://bkt/run'\n")
  train.parse_gin(["gs://bkt/gin/run.gin"], ["BATCH_SIZE = 4"], "gs://bkt/gin")
  assert gin.query_parameter("%TRAIN_STEPS") == 7
  assert gin.query_parameter("%MODEL_DIR") == "gs://bkt/run"
  assert gin.query_parameter("%BATCH_SIZE") == 4
