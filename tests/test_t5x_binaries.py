"""The real t5x binaries on our gin files, on CPU (t5x from ../shared/vendor, see
.ci/install_t5x.sh): the round trip users make.

1. `symbol-tuning convert HF_DIR DST --to t5x` writes a checkpoint that t5x.train restores
   with finetune.gin's defaults; the tiny twin trains FINETUNE_STEPS with best-fit packing,
   writes Orbax checkpoints, and a second run resumes from its newest one. Our trainer, on
   the same config, gives the same losses and parameters.
2. t5x.eval scores a rank-classification mixture and an exact-match task on 'validation'.
3. Our CLI reads the Orbax checkpoint t5x.train wrote (`convert --to hf`, `eval`), and the
   converted model gives t5x.eval's own scores.
4. symbol_tuning_flan_t5_small.gin with symbol_tuning_mix.gin trains a step of Flan-T5
   small's shape on the real 22-dataset mixture (synthetic local copies) from a checkpoint
   converted at step 5, and stops at step 6; only steps, batch, lengths and vocabulary
   overridden.
5. The decoder-only twin (t5x's DecoderOnlyModel, our PrefixLM converter, one length for
   prompt + answer) trains with t5x.train and is scored by t5x.eval on a rank mixture.
6. README's t5x commands run as written (fewer steps and eval examples appended).
"""
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import sys

import numpy as np
import pytest

import readme_support
import synthetic_data
import t5x_support

TINY_STEPS = 2
# The exact-match (flipped-label) task t5x.eval scores.
EXACT_TASK = "symbol_tuning.eval_bigbench.anachronisms.flipped"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, bigbench_dir):
  """The tiny twin trained TINY_STEPS steps from a converted checkpoint by t5x.train (a
  checkpoint after every step), and the same config by our trainer
  (t5x_support.compare_trainers)."""
  t5x_support.require_t5x()
  root = tmp_path_factory.mktemp("t5x_tiny")
  result = t5x_support.compare_trainers(root, bigbench_dir, steps=TINY_STEPS,
                                        t5x_checkpoint_period=1)
  return dict(result, root=root, model_dir=pathlib.Path(result["t5x_dir"]),
              env=t5x_support.t5x_env(BIGBENCH_DIR=str(bigbench_dir)))


def test_same_losses_and_parameters_as_t5x(tiny_run):
  """Our trainer is t5x's finetuning recipe on another binary: from the same checkpoint, on
  the same seqio batches (symbol_tuning_bigbench, seed 0, best-fit packing), in float32 with
  dropout 0, the per-step losses and the parameters after the last step are t5x.train's.

  Nothing differs in this setting: t5x's loss (cross-entropy + z-loss 1e-4, summed: no
  normalizing factor) and ours; t5x's Adafactor (decay 0.8 from step 0, factored second
  moments by the same rule, update clipping 1, parameter-scaled updates, epsilons 1e-30 and
  1e-3) and optax's as we configure it. Outside it (README, Training): from a checkpoint
  with optimizer state (the public Flan-T5 ones), t5x continues Adafactor's state and decay
  schedule at the checkpoint's step, ours starts them afresh."""
  assert tiny_run["steps"] == list(range(1, TINY_STEPS + 1))
  for ours, theirs in zip(tiny_run["ours_loss"], tiny_run["t5x_loss"]):
    assert math.isfinite(ours) and abs(ours - theirs) <= 1e-3 * abs(theirs), tiny_run
  # The parameters moved (by ~1e-2), and moved the same way (to float32 rounding).
  assert tiny_run["max_abs_param_change"] > 1e-3
  assert tiny_run["max_abs_param_diff"] < 1e-5, tiny_run


def test_converted_checkpoint_trains_with_t5x(tiny_run):
  model_dir = tiny_run["model_dir"]
  # t5x.train restored the converted checkpoint (optimizer state included) and stopped at
  # its step (0) + FINETUNE_STEPS (checkpointing every step; t5x also saves the step it
  # starts from).
  steps = sorted(int(p.name.split("_")[1]) for p in model_dir.glob("checkpoint_*"))
  assert steps == list(range(TINY_STEPS + 1))
  # t5x.train's default layout is Orbax (use_orbax=True), with the train state in state/.
  assert (model_dir / f"checkpoint_{TINY_STEPS}" / "state" / "_METADATA").is_file()
  losses = t5x_support.train_metrics(model_dir)
  assert sorted(losses) == list(range(1, TINY_STEPS + 1))
  assert all(math.isfinite(v) and v > 0 for v in losses.values())
  # Best-fit packing is what t5x's train binary used (models.EncoderDecoderModel's hook).
  config = " ".join((model_dir / "config.gin").read_text().replace("\\\n", " ").split())
  assert "feature_converter_cls = @features.BestFitEncDecFeatureConverter" in config


def test_a_restarted_run_trains_on_the_batches_of_an_uninterrupted_one(tiny_run, tmp_path):
  """The run as it stood after step TINY_STEPS - 1 (its checkpoints up to there), restarted
  by t5x.train, trains step TINY_STEPS on the batch the uninterrupted run did: the same loss,
  the same parameters bit for bit. symbol_tuning.gin fixes the data seed (DATASET_SEED) and
  saves the dataset iterator with each checkpoint, which t5x.train restores (a restart that
  replayed the stream from its start would train step TINY_STEPS on batch 1)."""
  from symbol_tuning.checkpoints import convert, flatten

  whole = tiny_run["model_dir"]
  last = TINY_STEPS - 1
  # t5x saved this host's tf.data iterator beside the train state.
  assert list((whole / f"checkpoint_{last}").rglob("train_ds-*")), \
      sorted(p.name for p in (whole / f"checkpoint_{last}").rglob("*"))
  # tiny_run's t5x command (t5x_support.compare_trainers' defaults), in a new MODEL_DIR that
  # holds its checkpoints up to `last`, as if preempted before checkpoint_TINY_STEPS.
  cmd = t5x_support.trainer_commands(tmp_path, tiny_run["root"], steps=TINY_STEPS, size="tiny",
                                     lengths=(512, 32), batch_size=8, activation_dtype="float32",
                                     t5x_checkpoint_period=1)["t5x"]
  restarted = tmp_path / "t5x"
  for step in range(TINY_STEPS):
    shutil.copytree(whole / f"checkpoint_{step}", restarted / f"checkpoint_{step}")
  code, out, err = t5x_support._run(cmd, t5x_support.REPO, tiny_run["env"], 900, None)  # pylint: disable=protected-access
  log = out + err
  assert code == 0, log[-6000:]
  assert f"checkpoint_{last}" in log
  resumed = t5x_support.train_metrics(restarted)
  assert list(resumed) == [TINY_STEPS]
  assert resumed[TINY_STEPS] == t5x_support.train_metrics(whole)[TINY_STEPS]
  (_, a), (_, b) = (convert.load_any(str(d / f"checkpoint_{TINY_STEPS}"))
                    for d in (restarted, whole))
  a, b = flatten(a), flatten(b)
  assert sorted(a) == sorted(b)
  assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def readme_tiny(tmp_path_factory):
  """README's Cloud TPU block for the tiny twin, run as written (TINY_STEPS steps, 2 eval
  examples per task): t5x.train from scratch, then t5x.eval of its checkpoint on the
  rank-classification mixture of the symbols setting."""
  t5x_support.require_t5x()
  root = tmp_path_factory.mktemp("readme_tiny")
  run_readme_t5x("Cloud TPU", 4, root, TINY_STEPS)
  model_dir = root / "runs" / "tiny_t5x"
  return {"model_dir": model_dir, "checkpoint": model_dir / f"checkpoint_{TINY_STEPS}",
          "rank": model_dir / "eval" / "inference_eval"}


@pytest.fixture(scope="module")
def tiny_eval(tiny_run, readme_tiny):
  """t5x.eval's outputs on a rank-classification mixture (README's run, above) and on an
  exact-match task (tiny_run's checkpoint; one task of the flipped mixture: the mixtures
  themselves are finalized by tests/test_gin_t5x.py), 2 examples of each task."""
  checkpoint = tiny_run["model_dir"] / f"checkpoint_{TINY_STEPS}"
  out_dir = tiny_run["root"] / "eval_exact"
  t5x_support.run_t5x("eval", ["symbol_tuning_eval_tiny.gin"], {
      "MIXTURE_OR_TASK_NAME": f"'{EXACT_TASK}'",
      "CHECKPOINT_PATH": f"'{checkpoint}'", "EVAL_OUTPUT_DIR": f"'{out_dir}'",
      "seqio.Evaluator.num_examples": 2}, tiny_run["env"])
  return {"exact": out_dir / "inference_eval", "rank": readme_tiny["rank"],
          "rank_checkpoint": readme_tiny["checkpoint"]}


@pytest.mark.parametrize("kind,metric", [("rank", "rank_classification_accuracy"),
                                         ("exact", "exact_match")])
def test_eval_files_score_the_validation_split(tiny_eval, kind, metric):
  files = sorted(tiny_eval[kind].glob("*-metrics.jsonl"))
  if kind == "rank":
    assert len(files) == 11  # one per task of the mixture: the 11 held-out tasks
  else:
    assert [f.name for f in files] == [f"{EXACT_TASK}-metrics.jsonl"]
  for path in files:
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["step"] == TINY_STEPS
    assert 0.0 <= record[metric] <= 100.0


def test_our_cli_reads_t5x_orbax_checkpoints_with_t5x_scores(tiny_eval, tmp_path, bigbench_dir):
  """The Orbax checkpoint t5x.train wrote -> `symbol-tuning convert --to hf` -> our scorer
  gives the log-likelihoods t5x.eval wrote for the same prompts and options."""
  del bigbench_dir  # extracted before `eval` below reads the BIG-bench tasks
  from symbol_tuning import cli  # pylint: disable=import-outside-toplevel
  hf_dir = tmp_path / "hf"
  assert cli.main(["convert", str(tiny_eval["rank_checkpoint"]), str(hf_dir), "--to", "hf"]) == 0
  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel
  from symbol_tuning.evaluation import scoring  # pylint: disable=import-outside-toplevel

  vocabulary = vocab.use_vocabulary("local")
  model = scoring.load_model(str(hf_dir), vocab_size=vocabulary.vocab_size)
  rows = []
  for path in sorted(tiny_eval["rank"].glob("*-00*.jsonl"))[:3]:
    rows += [json.loads(line) for line in path.read_text().splitlines()[:2]]
  assert rows
  eos = vocabulary.eos_id
  requests = [scoring.Request(vocabulary.encode(r["input"]["inputs_pretokenized"]) + [eos],
                              [vocabulary.encode(r["input"]["targets_pretokenized"]) + [eos]])
              for r in rows]
  ours = np.array([s[0] for s in scoring.Scorer(model).rank_naive(requests)])
  theirs = np.array([r["score"] for r in rows])
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
  # `eval` takes the t5x checkpoint directly, too.
  assert cli.main(["--vocab", "local", "eval", "--checkpoint", str(tiny_eval["rank_checkpoint"]),
                   "--suite", "bigbench", "--settings", "symbols", "--max_examples", "1",
                   "--out", str(tmp_path / "eval"), "--no_progress"]) == 0
  assert (tmp_path / "eval" / "results.json").is_file()


def test_flan_t5_small_file_with_the_mix_layer_trains(tmp_path):
  """The experiment file users run, on Flan-T5 small's shape from a converted checkpoint:
  one step on the 22-dataset mixture mixed 16% with instruction data."""
  t5x_support.require_t5x()
  hf_dir = t5x_support.random_hf_checkpoint(tmp_path / "hf", "small", 32128)
  from symbol_tuning import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["convert", str(hf_dir), str(tmp_path / "converted"), "--to", "t5x",
                   "--step", "5"]) == 0
  data_dir = synthetic_data.write_tune_copies(tmp_path / "data")
  model_dir = tmp_path / "run"
  t5x_support.run_t5x("train", ["symbol_tuning_flan_t5_small.gin", "symbol_tuning_mix.gin"], {
      "MODEL_DIR": f"'{model_dir}'",
      "FLAN_T5_CHECKPOINT": f"'{tmp_path / 'converted' / 'checkpoint_5'}'",
      "VOCABULARY_NAME": "'local'", "FINETUNE_STEPS": 1, "BATCH_SIZE": 2,
      "TASK_FEATURE_LENGTHS": "{'inputs': 256, 'targets': 16}",
      "utils.SaveCheckpointConfig.period": 1},
                      t5x_support.t5x_env(SYMBOL_TUNING_DATA_DIR=str(data_dir),
                                          HF_DATASETS_CACHE=str(tmp_path / "hf_cache")))
  # Restored at the converted checkpoint's own step, trained exactly FINETUNE_STEPS.
  assert (model_dir / "checkpoint_6" / "state" / "_METADATA").is_file()
  assert not (model_dir / "checkpoint_7").exists()
  losses = t5x_support.train_metrics(model_dir)
  assert list(losses) == [6] and math.isfinite(losses[6])
  config = (model_dir / "config.gin").read_text()  # the mix layer's mixture was trained on
  assert "SYMBOL_FRACTION = 0.16" in config and "symbol_tuning_mix()" in config


def run_readme_t5x(section: str, index: int, workdir: pathlib.Path, steps: int) -> list[str]:
  """README's t5x commands of one bash block, run by bash as written from `workdir` (which
  links gin/), with `steps` training steps and 2 eval examples appended (and the eval's
  checkpoint step to match); returns each command's output."""
  (workdir / "gin").symlink_to(t5x_support.REPO / "gin")
  # README says python / python3: this interpreter's (venv) bin folder comes first.
  bin_dir = os.path.dirname(sys.executable)
  env = t5x_support.t5x_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  logs = []
  for command in readme_support.block(section, index).commands:
    binary = shlex.split(command)[2]
    assert binary in ("t5x.train", "t5x.eval"), command
    extra = f"--gin.FINETUNE_STEPS={steps}" if binary == "t5x.train" else \
        "--gin.seqio.Evaluator.num_examples=2"
    line = re.sub(r"/checkpoint_\d+'", f"/checkpoint_{steps}'", command) + " " + extra
    code, out, err = t5x_support._run(["bash", "-c", line], workdir, env, 900, None)  # pylint: disable=protected-access
    assert code == 0, f"{line}\n{(out + err)[-6000:]}"
    logs.append(out + err)
  return logs


def test_decoder_only_twin_trains_and_evaluates_with_t5x(tmp_path, bigbench_dir):
  """README's decoder-only t5x commands: t5x.train trains the decoder-only tiny twin (t5x's
  DecoderOnlyModel) on symbol_tuning_bigbench with our PrefixLM converter, rows of the
  single length 544; t5x.eval scores a rank-classification mixture from its checkpoint."""
  del bigbench_dir
  t5x_support.require_t5x()
  log, _ = run_readme_t5x("Decoder-only models", 2, tmp_path, TINY_STEPS)
  model_dir = tmp_path / "runs" / "dec_t5x"
  assert "feature: decoder_loss_weights \t shape: [8, 544]" in log  # prompt + answer in one row
  losses = t5x_support.train_metrics(model_dir)  # t5x summarizes at its log period's end
  assert max(losses) == TINY_STEPS
  assert all(math.isfinite(v) and v > 0 for v in losses.values())
  config = " ".join((model_dir / "config.gin").read_text().replace("\\\n", " ").split())
  assert "feature_converter_cls = @features.BestFitPrefixLMFeatureConverter" in config
  out_dir = model_dir / "eval"
  files = sorted((out_dir / "inference_eval").glob("*-metrics.jsonl"))
  assert len(files) == 11  # the 11 held-out BIG-bench tasks, symbols setting
  for path in files:
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["step"] == TINY_STEPS
    assert 0.0 <= record["rank_classification_accuracy"] <= 100.0


def test_readme_tiny_twin_commands(readme_tiny):
  """README's Cloud TPU section: the tiny twins on CPU with the real binaries."""
  losses = t5x_support.train_metrics(readme_tiny["model_dir"])
  assert max(losses) == TINY_STEPS and all(math.isfinite(v) for v in losses.values())
  files = sorted(readme_tiny["rank"].glob("*-metrics.jsonl"))
  assert len(files) == 11 and all(
      json.loads(f.read_text().splitlines()[-1])["step"] == TINY_STEPS for f in files)
