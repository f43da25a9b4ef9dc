"""The embedded trainer on a tiny decoder-only model: CLI run, sharding, accumulation, resume."""
import json

import jax
import numpy as np
import pytest

import trainer_support
from trainer_support import LLAMA_TINY, TASK
from symbol_tuning import cli
from symbol_tuning.checkpoints import convert
from symbol_tuning.models import registry
from symbol_tuning.training import data
from symbol_tuning.training import trainer as trainer_lib

pytestmark = pytest.mark.usefixtures("clean_gin")


def small_config(model_dir, **kw):
  return trainer_support.small_config(model_dir, **{**LLAMA_TINY, **kw})


def test_cli_trains_a_decoder_only_model(tmp_path, capsys, bigbench_dir):
  _, rows = trainer_support.cli_train(tmp_path, capsys,
                                      "local/symbol_tuning_bigbench_llama_tiny.gin",
                                      "{'targets': 272}", checkpoint_period=16)
  trainer_support.assert_loss_goes_down(rows, by=0.2)  # 9.47 -> 9.09 here
  assert all(r["target_tokens"] > 0 and r["examples_per_s"] > 0 for r in rows)
  config, params = convert.load_any(str(tmp_path))
  assert registry.family_of(config).answer_in_sequence and "decoder" in params and "encoder" not in params
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


def test_sharded_step_equals_single_device(tmp_path, bigbench_dir):
  trainer_support.assert_sharded_step_equals_single_device(tmp_path, LLAMA_TINY)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, bigbench_dir):
  trainer_support.assert_accumulation_matches_one_big_batch(tmp_path, LLAMA_TINY)


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
  trainer_support.assert_same_checkpoint(tmp_path / "ref", tmp_path / "run")


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
