"""The real t5x binaries on our gin files, on CPU (t5x from ../shared/vendor, see
.ci/install_t5x.sh): the round trip users make.

1. `symbol-tuning convert HF_DIR DST --to t5x --step 1000` writes a checkpoint that
   t5x.train restores with finetune.gin's defaults; the tiny twin trains exactly
   FINETUNE_STEPS from step 1000, with best-fit packing, writes Orbax checkpoints, and a
   second run resumes from its newest one.
2. t5x.eval scores the rank-classification and exact-match mixtures on 'validation'.
3. Our CLI reads the Orbax checkpoint t5x.train wrote (`convert --to hf`, `eval`), and the
   converted model gives t5x.eval's own scores.
4. symbol_tuning_flan_t5_small.gin with symbol_tuning_mix.gin trains a step of Flan-T5
   small's shape on the real 22-dataset mixture (synthetic local copies), only steps, batch,
   lengths and vocabulary overridden.
"""
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import synthetic_data
import t5x_support

TINY_START = 1000  # the converted checkpoint's step
TINY_STEPS = 2


def _cli(*args, env=None):
  proc = subprocess.run([sys.executable, "-m", "symbol_tuning.cli", *args],
                        capture_output=True, text=True, env=env or t5x_support.t5x_env(),
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _random_hf_checkpoint(path, size, vocab_size, seed=0):
  """A random model of `size`'s shape with `vocab_size` ids (the t5x model file's), saved as
  a HuggingFace directory (what users download: config.json + model.safetensors)."""
  import jax  # pylint: disable=import-outside-toplevel

  from symbol_tuning.checkpoints import hf  # pylint: disable=import-outside-toplevel
  from symbol_tuning.model import get_config  # pylint: disable=import-outside-toplevel
  from symbol_tuning.model.network import init_params  # pylint: disable=import-outside-toplevel

  config = get_config(size, vocab_size=vocab_size)
  hf.save_hf(config, jax.device_get(init_params(config, jax.random.PRNGKey(seed))), path)
  return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, bigbench_dir):
  """A converted tiny checkpoint trained by t5x.train for TINY_STEPS steps."""
  t5x_support.require_t5x()
  root = tmp_path_factory.mktemp("t5x_tiny")
  hf_dir = _random_hf_checkpoint(root / "hf", "tiny", 8064)
  _cli("convert", str(hf_dir), str(root / "converted"), "--to", "t5x",
       "--step", str(TINY_START))
  model_dir = root / "run"
  bindings = {"MODEL_DIR": f"'{model_dir}'",
              "FLAN_T5_CHECKPOINT": f"'{root / 'converted' / f'checkpoint_{TINY_START}'}'",
              # A checkpoint (and so a metrics record) every step: each step's loss is logged.
              "FINETUNE_STEPS": TINY_STEPS, "utils.SaveCheckpointConfig.period": 1}
  env = t5x_support.t5x_env(BIGBENCH_DIR=str(bigbench_dir))
  log = t5x_support.run_t5x("train", ["symbol_tuning_bigbench_tiny.gin"], bindings, env)
  return {"root": root, "model_dir": model_dir, "bindings": bindings, "env": env, "log": log}


def test_converted_checkpoint_trains_exactly_finetune_steps(tiny_run):
  model_dir = tiny_run["model_dir"]
  end = TINY_START + TINY_STEPS
  assert f"checkpoint_{TINY_START}" in tiny_run["log"]  # restored from the converted one
  steps = sorted(int(p.name.split("_")[1]) for p in model_dir.glob("checkpoint_*"))
  assert steps[-1] == end
  # t5x.train's default layout is Orbax (use_orbax=True), with the train state in state/.
  assert (model_dir / f"checkpoint_{end}" / "state" / "_METADATA").is_file()
  losses = t5x_support.train_metrics(model_dir)
  assert sorted(losses) == list(range(TINY_START + 1, end + 1))
  assert all(math.isfinite(v) and v > 0 for v in losses.values())
  # Best-fit packing is what t5x's train binary used (models.EncoderDecoderModel's hook).
  config = " ".join((model_dir / "config.gin").read_text().replace("\\\n", " ").split())
  assert "feature_converter_cls = @packing.BestFitEncDecFeatureConverter" in config


def test_a_second_run_resumes_from_the_newest_checkpoint(tiny_run):
  bindings = dict(tiny_run["bindings"], FINETUNE_STEPS=TINY_STEPS + 1)
  log = t5x_support.run_t5x("train", ["symbol_tuning_bigbench_tiny.gin"], bindings,
                            tiny_run["env"])
  end = TINY_START + TINY_STEPS
  assert f"checkpoint_{end}" in log
  assert (tiny_run["model_dir"] / f"checkpoint_{end + 1}" / "state").is_dir()
  losses = t5x_support.train_metrics(tiny_run["model_dir"])
  assert end + 1 in losses and math.isfinite(losses[end + 1])


@pytest.fixture(scope="module")
def tiny_eval(tiny_run):
  """t5x.eval of the trained checkpoint on a rank-classification and an exact-match mixture
  (4 examples of each task)."""
  checkpoint = tiny_run["model_dir"] / f"checkpoint_{TINY_START + TINY_STEPS}"
  out = {}
  for kind, mixture in (("rank", "symbol_tuning_eval_bigbench_rank_symbols"),
                        ("exact", "symbol_tuning_eval_bigbench_flipped")):
    out_dir = tiny_run["root"] / f"eval_{kind}"
    t5x_support.run_t5x("eval", ["symbol_tuning_eval_tiny.gin"], {
        "MIXTURE_OR_TASK_NAME": f"'{mixture}'", "CHECKPOINT_PATH": f"'{checkpoint}'",
        "EVAL_OUTPUT_DIR": f"'{out_dir}'", "seqio.Evaluator.num_examples": 4},
                        tiny_run["env"])
    out[kind] = out_dir / "inference_eval"
  out["checkpoint"] = checkpoint
  return out


@pytest.mark.parametrize("kind,metric", [("rank", "rank_classification_accuracy"),
                                         ("exact", "exact_match")])
def test_eval_files_score_the_validation_split(tiny_eval, kind, metric):
  files = sorted(tiny_eval[kind].glob("*-metrics.jsonl"))
  assert len(files) >= 6  # one per task of the mixture (11 held-out; flipped: the binary ones)
  for path in files:
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["step"] == TINY_START + TINY_STEPS
    assert 0.0 <= record[metric] <= 100.0


def test_our_cli_reads_t5x_orbax_checkpoints_with_t5x_scores(tiny_eval, tmp_path, bigbench_dir):
  """The Orbax checkpoint t5x.train wrote -> `symbol-tuning convert --to hf` -> our scorer
  gives the log-likelihoods t5x.eval wrote for the same prompts and options."""
  hf_dir = tmp_path / "hf"
  _cli("convert", str(tiny_eval["checkpoint"]), str(hf_dir), "--to", "hf")
  from symbol_tuning import vocab  # pylint: disable=import-outside-toplevel
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
  _cli("--vocab", "local", "eval", "--checkpoint", str(tiny_eval["checkpoint"]), "--suite",
       "bigbench", "--settings", "symbols", "--max_examples", "1", "--out",
       str(tmp_path / "eval"), env=t5x_support.t5x_env(BIGBENCH_DIR=str(bigbench_dir)))
  assert (tmp_path / "eval" / "results.json").is_file()


def test_flan_t5_small_file_with_the_mix_layer_trains(tmp_path):
  """The experiment file users run, on Flan-T5 small's shape from a converted checkpoint:
  one step on the 22-dataset mixture mixed 16% with instruction data."""
  t5x_support.require_t5x()
  hf_dir = _random_hf_checkpoint(tmp_path / "hf", "small", 32128)
  _cli("convert", str(hf_dir), str(tmp_path / "converted"), "--to", "t5x")
  data_dir = synthetic_data.write_tune_copies(tmp_path / "data")
  model_dir = tmp_path / "run"
  t5x_support.run_t5x("train", ["symbol_tuning_flan_t5_small.gin", "symbol_tuning_mix.gin"], {
      "MODEL_DIR": f"'{model_dir}'",
      "FLAN_T5_CHECKPOINT": f"'{tmp_path / 'converted' / 'checkpoint_0'}'",
      "VOCABULARY_NAME": "'local'", "FINETUNE_STEPS": 1, "BATCH_SIZE": 2,
      "TASK_FEATURE_LENGTHS": "{'inputs': 256, 'targets': 16}",
      "utils.SaveCheckpointConfig.period": 1},
                      t5x_support.t5x_env(SYMBOL_TUNING_DATA_DIR=str(data_dir),
                                          HF_DATASETS_CACHE=str(tmp_path / "hf_cache")))
  assert (model_dir / "checkpoint_1" / "state" / "_METADATA").is_file()
  losses = t5x_support.train_metrics(model_dir)
  assert list(losses) == [1] and math.isfinite(losses[1])
  config = (model_dir / "config.gin").read_text()  # the mix layer's mixture was trained on
  assert "SYMBOL_FRACTION = 0.16" in config and "symbol_tuning_mix()" in config
