"""The embedded trainer on a tiny decoder-only model: CLI run, sharding, accumulation, resume."""
import json

import gin
import jax
import numpy as np
import pytest

from symbol_tuning import cli
from symbol_tuning.checkpoints import convert
from symbol_tuning.model import family
from symbol_tuning.training import data
from symbol_tuning.training import trainer as trainer_lib

TASK = "symbol_tuning.bigbench.navigate"


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def small_config(model_dir, **kw):
  values = dict(model_dir=str(model_dir), mixture_or_task_name=TASK, train_steps=4,
                task_feature_lengths=272, batch_size=8,  # one length: prompt + answer
                model_size="llama-tiny", vocabulary="local", dropout_rate=0.0,
                checkpoint_period=2, log_period=1)
  values.update(kw)
  return trainer_lib.TrainConfig(**values)


def one_step(cfg, devices, host_params=None):
  trainer = trainer_lib.Trainer(cfg, devices=devices)
  if host_params is not None:
    trainer.state = trainer._initial_state(host_params)
  batch = next(data.host_batches(trainer.data_cfg))
  metrics = trainer.step(batch)
  params = jax.tree.map(np.asarray, jax.device_get(trainer.state["params"]))
  return {k: float(v) for k, v in jax.device_get(metrics).items()}, params, batch


def test_cli_trains_a_decoder_only_model(tmp_path, capsys, bigbench_dir):
  code = cli.main(["train", "--gin_file=local/symbol_tuning_bigbench_llama_tiny.gin",
                   f"--gin.MODEL_DIR='{tmp_path}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
                   "--gin.TRAIN_STEPS=16", "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=16",
                   "--gin.LOG_PERIOD=1",
                   "--gin.TASK_FEATURE_LENGTHS={'targets': 272}", "--no_progress"])
  err = capsys.readouterr().err
  assert code == 0, err
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, 17))
  first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
  assert last < first - 0.2, (first, last)  # the loss goes down (9.47 -> 9.09 here)
  assert all(r["target_tokens"] > 0 and r["examples_per_s"] > 0 for r in rows)
  config, params = convert.load_any(str(tmp_path))
  assert family.is_decoder_only(config) and "decoder" in params and "encoder" not in params
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
def test_batches_train_the_answer_only(bigbench_dir, lengths):
  cfg = data.DataConfig(TASK, lengths, batch_size=4, decoder_only=True)
  batch = next(data.host_batches(cfg))
  assert set(batch) == set(data.DECODER_ONLY_FEATURES)
  weights, segments = batch["decoder_loss_weights"], batch["decoder_segment_ids"]
  prefix = batch["decoder_causal_attention"]
  assert weights.shape == (4, 272)
  # Per packed example: prompt (no loss) then answer (loss), nothing weighted in padding.
  assert not weights[segments == 0].any()
  assert not (weights.astype(bool) & prefix.astype(bool) & (np.roll(prefix, -1, 1) > 0)).any()
  examples, _ = data.batch_counts(batch)
  assert examples == int(segments.max(axis=1).sum()) >= 4


def test_sharded_step_equals_single_device(tmp_path, bigbench_dir):
  cfg1 = small_config(tmp_path / "a", mesh_data=1, mesh_model=1)
  single_metrics, single_params, _ = one_step(cfg1, jax.devices()[:1])
  init = jax.tree.map(np.asarray, jax.device_get(
      trainer_lib.Trainer(cfg1, devices=jax.devices()[:1]).state["params"]))
  cfg8 = small_config(tmp_path / "b", mesh_data=4, mesh_model=2)
  sharded_metrics, sharded_params, _ = one_step(cfg8, jax.devices(), init)
  assert sharded_metrics["loss"] == pytest.approx(single_metrics["loss"], rel=1e-6)
  assert sharded_metrics["target_tokens"] == single_metrics["target_tokens"]
  for a, b in zip(jax.tree.leaves(single_params), jax.tree.leaves(sharded_params)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, bigbench_dir):
  devices = jax.devices()[:1]
  base = dict(mesh_data=1, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
  m1, p1, _ = one_step(small_config(tmp_path / "a", **base), devices)
  m4, p4, _ = one_step(small_config(tmp_path / "b", num_microbatches=4, **base), devices)
  assert m4["loss"] == pytest.approx(m1["loss"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, bigbench_dir):
  """A run stopped after its step-2 checkpoint and restarted ends where an uninterrupted
  4-step run ends, bit for bit (dropout on: its key is folded from the step). The
  SIGKILL cases of the T5 test exercise the same model-independent checkpoint code."""
  devices = jax.devices()[:1]
  kw = dict(mesh_data=1, dropout_rate=0.1, checkpoint_period=2)
  trainer_lib.Trainer(small_config(tmp_path / "ref", **kw), devices).run(progress=False)
  trainer_lib.Trainer(small_config(tmp_path / "run", train_steps=2, **kw), devices).run(
      progress=False)
  trainer_lib.Trainer(small_config(tmp_path / "run", **kw), devices).run(progress=False)
  _, want = convert.load_any(str(tmp_path / "ref"))
  _, got = convert.load_any(str(tmp_path / "run"))
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(want),
                               jax.tree_util.tree_leaves_with_path(got)):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


def test_a_single_length_is_refused_for_t5(tmp_path, bigbench_dir):
  with pytest.raises(trainer_lib.TrainError, match="single length is for decoder-only"):
    trainer_lib.Trainer(small_config(tmp_path, model_size="tiny"), jax.devices()[:1])


def test_a_length_no_prompt_fits_fails_instead_of_hanging(tmp_path, bigbench_dir):
  """At 24 tokens not one prompt fits: the repeating stream used to spin forever in its
  filter; now the run stops with the task, the length and the count skipped."""
  cfg = small_config(tmp_path, task_feature_lengths=24)
  with pytest.raises(data.DataError, match=r"navigate \(train\): none of its prompts fits 24 "
                                           r"tokens .*\((\d+) of \1 queries skipped\)"):
    trainer_lib.Trainer(cfg, jax.devices()[:1]).run(progress=False)


def test_prefix_lm_is_refused_for_t5(tmp_path, bigbench_dir):
  with pytest.raises(trainer_lib.TrainError, match="PREFIX_LM applies to decoder-only"):
    trainer_lib.Trainer(small_config(tmp_path, model_size="tiny", prefix_lm=True),
                        jax.devices()[:1])
