"""The embedded trainer, for every model family: CLI run, sharding, gradient accumulation,
resume, bad input; decoder-only specifics (answer-only batches, single length, prefix LM)."""
import json
import pathlib
import subprocess

import jax
import numpy as np
import pytest

import trainer_support
from trainer_support import (KILL_CONFIGS, LLAMA_TINY, STEPS, T5_TINY, TASK, logged_steps,
                             run_and_kill, subprocess_env, train_cmd)
from symbol_tuning import cli
from symbol_tuning.checkpoints import convert
from symbol_tuning.models import registry
from symbol_tuning.training import data
from symbol_tuning.training import trainer as trainer_lib

# family -> the TrainConfig overrides of its tiny model (trainer_support)
MODELS = {"t5": T5_TINY, "decoder": LLAMA_TINY}
# Decoder-only layouts checked by the sharded step too: Gemma 3's block (sliding-window
# local layers and global ones, sandwich norms, QK-norm, local RoPE) trains and shards like
# Llama. Its local layers are Mistral's windowed attention (Mistral: Llama's block with a
# window everywhere) and its block is Gemma 2's (which adds soft-capping, drops QK-norm):
# tests/test_model.py and test_checkpoints.py check those against transformers.
LAYOUTS = {**MODELS, "decoder-gemma3": dict(LLAMA_TINY, model_size="gemma3-tiny")}

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


def test_every_family_has_a_tiny_model():
  assert sorted(MODELS) == sorted(registry.FAMILIES)


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_sharded_step_equals_single_device(tmp_path, bigbench_dir, family):
  trainer_support.assert_sharded_step_equals_single_device(tmp_path, LAYOUTS[family])


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


@pytest.mark.parametrize("family", sorted(MODELS))
def test_gradient_accumulation_matches_one_big_batch(tmp_path, bigbench_dir, family):
  trainer_support.assert_accumulation_matches_one_big_batch(tmp_path, MODELS[family])


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


# The tiny decoder-only model here, on a local disk; the tiny T5 on GCS, where orbax writes
# in place and commits last (tests/test_gcs.py: test_train_kill_resume_convert_on_gcs). Both
# families share the checkpointing and data-position code these runs exercise.
@pytest.mark.parametrize("kind", ["decoder_only"])
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


# ------------------------------------------------------------------------------------------
# Decoder-only specifics.
# ------------------------------------------------------------------------------------------
def llama_config(model_dir, **kw):
  return trainer_support.small_config(model_dir, **{**LLAMA_TINY, **kw})


def test_cli_trains_a_decoder_only_model(tmp_path, capsys, bigbench_dir):
  _, rows = trainer_support.cli_train(tmp_path, capsys,
                                      "local/symbol_tuning_bigbench_llama_tiny.gin",
                                      "{'targets': 272}", checkpoint_period=16)
  trainer_support.assert_loss_goes_down(rows, by=0.2)  # 9.47 -> 9.09 here
  assert all(r["target_tokens"] > 0 and r["examples_per_s"] > 0 for r in rows)
  config, params = convert.load_any(str(tmp_path))
  assert registry.family_of(config).name == "decoder" and "encoder" not in params
  # `eval` takes the run directory and scores it from the KV cache.
  out = tmp_path / "eval"
  code = cli.main(["eval", "--checkpoint", str(tmp_path), "--suite", "bigbench",
                   "--max_examples", "1", "--input_length", "256", "--settings", "symbols",
                   "--out", str(out), "--no_progress"])
  assert code == 0, capsys.readouterr().err
  results = json.loads((out / "results.json").read_text())
  records = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  assert results["num_examples"] == len(records) > 0
  assert all(len(r["scores"]) == len(r["options"]) for r in records)


@pytest.mark.parametrize("lengths", [{"inputs": 256, "targets": 16}, {"targets": 272}])
def test_decoder_batches_train_the_answer_only(bigbench_dir, lengths):
  cfg = data.DataConfig(TASK, lengths, batch_size=4, family="decoder")
  batch = next(data.host_batches(cfg))
  assert set(batch) == set(registry.get_family("decoder").model_features)
  weights, segments = batch["decoder_loss_weights"], batch["decoder_segment_ids"]
  prefix = batch["decoder_causal_attention"]
  assert weights.shape == (4, 272)
  # Per packed example: prompt (no loss) then answer (loss), nothing weighted in padding.
  assert not weights[segments == 0].any()
  assert not (weights.astype(bool) & prefix.astype(bool) & (np.roll(prefix, -1, 1) > 0)).any()
  examples, _ = registry.get_family("decoder").batch_counts(batch)
  assert examples == int(segments.max(axis=1).sum()) >= 4


def test_decoder_resume_from_a_checkpoint_is_bit_exact(tmp_path, bigbench_dir):
  """A run stopped after its step-2 checkpoint and restarted ends where an uninterrupted
  4-step run ends, bit for bit (dropout on: its key is folded from the step). The
  SIGKILL cases of the T5 test exercise the same model-independent checkpoint code."""
  devices = jax.devices()[:1]
  kw = dict(mesh_data=1, dropout_rate=0.1, checkpoint_period=2)
  trainer_lib.Trainer(llama_config(tmp_path / "ref", **kw), devices).run(progress=False)
  trainer_lib.Trainer(llama_config(tmp_path / "run", train_steps=2, **kw), devices).run(
      progress=False)
  trainer_lib.Trainer(llama_config(tmp_path / "run", **kw), devices).run(progress=False)
  trainer_support.assert_same_checkpoint(tmp_path / "ref", tmp_path / "run")


def test_a_single_length_is_refused_for_t5(tmp_path, bigbench_dir):
  with pytest.raises(trainer_lib.TrainError, match="single length is for decoder-only"):
    trainer_lib.Trainer(llama_config(tmp_path, model_size="tiny"), jax.devices()[:1])


def test_a_length_no_prompt_fits_fails_instead_of_hanging(tmp_path, bigbench_dir):
  """At 24 tokens not one prompt fits: the repeating stream used to spin forever in its
  filter; now the run stops with the task, the length and the count skipped."""
  cfg = llama_config(tmp_path, task_feature_lengths=24)
  with pytest.raises(data.DataError, match=r"navigate \(train\): none of its prompts fits 24 "
                                           r"tokens .*\((\d+) of \1 queries skipped\)"):
    trainer_lib.Trainer(cfg, jax.devices()[:1]).run(progress=False)


def test_prefix_lm_is_refused_for_t5(tmp_path, bigbench_dir):
  with pytest.raises(trainer_lib.TrainError, match="PREFIX_LM applies to decoder-only"):
    trainer_lib.Trainer(llama_config(tmp_path, model_size="tiny", prefix_lm=True),
                        jax.devices()[:1])
