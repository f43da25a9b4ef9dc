"""The embedded trainer: CLI run, sharding, gradient accumulation, resume, bad input."""
import pathlib
import subprocess

import pytest

import trainer_support
from trainer_support import (KILL_CONFIGS, STEPS, T5_TINY, TASK, logged_steps, run_and_kill,
                             subprocess_env, train_cmd)
from symbol_tuning import cli
from symbol_tuning.checkpoints import convert
from symbol_tuning.training import trainer as trainer_lib

pytestmark = pytest.mark.usefixtures("clean_gin")


def test_cli_trains_writes_checkpoints_events_and_config(tmp_path, capsys, bigbench_dir):
  err, rows = trainer_support.cli_train(tmp_path, capsys, "local/symbol_tuning_bigbench_tiny.gin",
                                        "{'inputs': 512, 'targets': 16}", checkpoint_period=8)
  trainer_support.assert_loss_goes_down(rows, by=0.5)
  for key in ("examples_per_s", "tokens_per_s", "learning_rate", "z_loss"):
    assert key in rows[-1]
  assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_16",
                                                                   "checkpoint_8"]
  assert list((tmp_path / "train").glob("events.out.tfevents.*"))
  operative = (tmp_path / "config.gin").read_text()
  assert "TrainConfig.train_steps = %TRAIN_STEPS" in operative or "TRAIN_STEPS = 16" in operative
  assert "trained to step 16" in err
  # The trained model converts to a HuggingFace directory.
  config, params = convert.load_any(str(tmp_path))
  assert config.d_model == 64 and "encoder" in params


def test_sharded_step_equals_single_device(tmp_path, bigbench_dir):
  trainer_support.assert_sharded_step_equals_single_device(tmp_path, T5_TINY)


def test_axes_the_mesh_cannot_split_are_replicated():
  from symbol_tuning.models import registry as network
  from symbol_tuning.models.t5 import config as model_config
  from symbol_tuning.training import partitioning
  tiny = model_config.get_config("tiny", vocab_size=8064)
  axes, shapes = network.get_logical_axes(tiny), network.param_shapes(tiny)
  rules, notes = partitioning.fit_rules(partitioning.make_mesh(1, 8), axes, shapes)
  assert dict(rules)["heads"] is None  # 4 heads on 8: replicated
  assert {k: v for k, v in rules if k != "heads"} == {
      k: v for k, v in partitioning.STANDARD_RULES if k != "heads"}
  assert notes == ["heads (4) replicated, the model axis (8) does not divide it"]
  assert partitioning.fit_rules(partitioning.make_mesh(4, 2), axes, shapes) == (
      partitioning.STANDARD_RULES, [])


def test_gradient_accumulation_matches_one_big_batch(tmp_path, bigbench_dir):
  trainer_support.assert_accumulation_matches_one_big_batch(tmp_path, T5_TINY)


@pytest.mark.parametrize("override,message", [
    ("--gin.MIXTURE_OR_TASK_NAME='symbol_tuning_bigbenhc'", "did you mean symbol_tuning_bigbench"),
    ("--gin_file=local/nonexistent.gin", "gin: Unable to open file: local/nonexistent.gin"),
    ("--gin.BATCH_SIZE=6", "BATCH_SIZE 6 must be divisible by the data axis (8)"),
    ("--gin.TRAIN_STEPZ=3", "gin: no gin file uses the macro TRAIN_STEPZ; did you mean TRAIN_STEPS?"),
    ("--gin.TrainConfig.train_stepz=3", "gin:"),
    ("--gin.INITIAL_CHECKPOINT_PATH='/nonexistent/flan'", "does not exist"),
    ("--gin.MESH_MODEL=3", "model axis 3 does not divide the 8 devices"),
])
def test_bad_configuration_is_a_one_line_error(tmp_path, capsys, override, message):
  code = cli.main(["train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
                   f"--gin.MODEL_DIR='{tmp_path}'", override, "--no_progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert message in err and len(err.splitlines()) == 1, err


def test_mismatched_checkpoint_is_rejected(tmp_path, capsys):
  from symbol_tuning.checkpoints import native
  from symbol_tuning.models import registry as network
  from symbol_tuning.models.t5 import config as model_config
  small_vocab = model_config.get_config("tiny", vocab_size=256)
  native.save_native(small_vocab, network.init_params(small_vocab), str(tmp_path / "ckpt"))
  code = cli.main(["train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
                   f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                   f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path / 'ckpt'}'", "--no_progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "vocabulary (256) is smaller than the tasks' (8000)" in err


# ----------------------------------------------------------------------------------------
# Exact resume: a run SIGKILLed mid-step and mid-checkpoint-write, then restarted, ends
# with the same parameters, bit for bit, as a run that was never interrupted.
# ----------------------------------------------------------------------------------------
def mid_write(model_dir):
  return any("tmp" in p.name for p in pathlib.Path(model_dir).glob("checkpoint_*"))


@pytest.mark.parametrize("kind", list(KILL_CONFIGS))
def test_resume_after_sigkill_is_bit_exact(tmp_path, bigbench_dir, kind):
  ref = tmp_path / "ref"  # the uninterrupted run, alongside the interrupted one
  reference = subprocess.Popen(train_cmd(ref, kind), env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  run = tmp_path / "run"
  # 1. killed while a checkpoint is being written (orbax's temporary directory exists).
  assert run_and_kill(run, mid_write, kind)
  # 2. killed in the middle of training, between checkpoints.
  assert run_and_kill(run, lambda d: logged_steps(d) >= 8, kind)
  # 3. restarted: runs to the end from the newest complete checkpoint.
  done = subprocess.run(train_cmd(run, kind), env=subprocess_env(), capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  _, ref_err = reference.communicate(timeout=300)
  assert reference.returncode == 0, ref_err[-2000:]
  trainer_support.assert_same_checkpoint(ref, run)
  # The metrics log has one line per step, as if nothing had happened.
  steps = [r["step"] for r in trainer_support.metrics_rows(run)]
  assert steps == list(range(1, STEPS + 1))
