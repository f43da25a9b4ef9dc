"""HF decoder-only models symbol-tuned by the real t5x (t5x from ../shared/vendor, see
.ci/install_t5x.sh): our decoder network as the module of t5x's DecoderOnlyModel
(symbol_tuning/models/decoder/t5x_module.py, gin/t5x/models/hf_decoder.gin).

1. Every size file users run (Llama-3.2-1B/3B, Llama-3.1-8B, Qwen2.5-0.5B..7B) finalizes with
   the real t5x: our module, our PrefixLM converter, its partitioning; its parameter count
   is the published one, and every dimension the partitioning shards divides evenly.
2. A tiny random Llama saved by `transformers` -> `symbol-tuning convert --to t5x`
   -> t5x.train symbol-tunes it on the BIG-bench suite -> t5x.eval scores a rank
   mixture -> our CLI reads the checkpoint t5x wrote (`eval`, convert back to HF, our
   scorer): the log-likelihoods t5x.eval wrote, for the same prompts and options. These are
   README's commands, run as written with fewer steps and examples.
3. A tiny Qwen2 (q/k/v biases, tied embeddings) converted at step 5 trains one step from
   there with t5x.train.
"""
import json
import math
import os
import re
import shlex
import sys

import numpy as np
import pytest

import hf_reference
import readme_support
import t5x_support

STEP = 5  # the converted checkpoint's own step: t5x.train continues from it
STEPS = 2
# The tiny twins' shapes (gin/t5x/models/{llama,qwen2}_tiny.gin) as HF config.json values.
_TINY = dict(vocab_size=8064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16)
HF_TINY = {
    "llama": dict(_TINY, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "qwen2": dict(_TINY, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "gemma2": dict(_TINY, rms_norm_eps=1e-6, sliding_window=8, query_pre_attn_scalar=16,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
}
# Published parameter counts (the HF model cards' safetensors totals).
SIZES = {"llama_3_2_1b": 1_235_814_400, "llama_3_2_3b": 3_212_749_824,
         "llama_3_1_8b": 8_030_261_248, "qwen2_5_0_5b": 494_032_768,
         "qwen2_5_1_5b": 1_543_714_304, "qwen2_5_3b": 3_085_938_688,
         "qwen2_5_7b": 7_615_616_512, "gemma_2_2b": 2_614_341_888,
         "gemma_2_9b": 9_241_705_984}
# Logical axes t5x's standard rules put on the 'model' mesh axis (t5x/partitioning.py).
MODEL_PARALLEL_AXES = {"vocab", "mlp", "heads", "joined_kv"}


def _ok(probe, name):
  result = probe[name]
  assert "error" not in result, f"{name}: {result.get('error')}"
  return result


@pytest.fixture(scope="module")
def size_probe():
  """Each size file with the train and eval run files, finalized by the real t5x."""
  t5x_support.require_t5x()
  # The package's vocabulary (no HF download here); nothing written into MODEL_DIR.
  local = ["HF_MODEL_DIR = 'local'", "MODEL_CONFIG_DIR = None"]
  cases = {}
  for size in SIZES:
    cases[f"train_{size}"] = ("train", [f"models/{size}.gin", "symbol_tuning_decoder.gin"],
                              local + ["MODEL_DIR = '/tmp/m'",
                                       "INITIAL_CHECKPOINT_PATH = '/tmp/c/checkpoint_0'"])
    cases[f"eval_{size}"] = ("evaluate", [f"models/{size}.gin", "symbol_tuning_eval_decoder.gin"],
                             local + ["CHECKPOINT_PATH = '/tmp/m/checkpoint_4000'",
                                      "EVAL_OUTPUT_DIR = '/tmp/e'"])
  cases["train_no_checkpoint"] = ("train", ["models/llama_3_2_1b.gin",
                                            "symbol_tuning_decoder.gin"],
                                  local + ["MODEL_DIR = '/tmp/m'"])
  for i, command in enumerate(readme_support.block("Decoder-only models", 4).commands):
    if command.startswith("python3 -m t5x."):
      args = shlex.split(command)
      files = [a.split("=", 1)[1] for a in args if a.startswith("--gin_file=")]
      bindings = [" = ".join(a[len("--gin."):].split("=", 1)) for a in args
                  if a.startswith("--gin.")]
      binary = "train" if args[2] == "t5x.train" else "evaluate"
      cases[f"readme_{i}"] = (binary, files, bindings + local)
  return t5x_support.probe_gin(cases)


@pytest.mark.parametrize("size", SIZES)
def test_size_files_finalize_with_published_shapes_and_even_partitioning(size_probe, size):
  from symbol_tuning.models import registry  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models.decoder.config import DecoderConfig  # pylint: disable=import-outside-toplevel

  train = _ok(size_probe, f"train_{size}")
  model = train["model"]
  assert model["model_class"] == "DecoderOnlyModel"
  assert model["converter"] == "symbol_tuning.models.decoder.features.BestFitPrefixLMFeatureConverter"
  assert train["restore_path"] == "/tmp/c/checkpoint_0" and train["total_steps"] == 4000
  assert train["train"]["lengths"] == {"targets": 2048}
  config = DecoderConfig.from_dict(model["config"])
  assert (config.dtype, config.remat, config.dropout_rate) == ("bfloat16", True, 0.05)
  shapes = registry.param_shapes(config)
  axes = registry.get_logical_axes(config)
  import jax  # pylint: disable=import-outside-toplevel

  leaves = jax.tree.leaves(shapes)
  assert sum(int(np.prod(s.shape)) for s in leaves) == SIZES[size]
  partitions = train["num_partitions"]
  for spec, leaf in zip(jax.tree.leaves(axes, is_leaf=lambda x: hasattr(x, "index")), leaves):
    for name, dim in zip(spec, leaf.shape):
      if name in MODEL_PARALLEL_AXES:
        assert dim % partitions == 0, (size, spec, leaf.shape, partitions)
  evaluate = _ok(size_probe, f"eval_{size}")
  assert evaluate["model"]["config"] == dict(model["config"], dropout_rate=0.0)
  assert evaluate["dataset"]["name"] == "symbol_tuning_eval_rank_symbols"
  assert evaluate["dataset"]["split"] == "validation"
  assert evaluate["num_partitions"] == partitions


def test_readme_tpu_commands_finalize_as_written(size_probe):
  """README's TPU block (the vocabulary swapped for the local one, nothing written)."""
  readme = {k: _ok(size_probe, k) for k in size_probe if k.startswith("readme_")}
  assert len(readme) == 2
  train, evaluate = (readme[k] for k in sorted(readme))
  assert train["restore_path"] == "gs://BUCKET/llama_3_2_1b_t5x/checkpoint_0"
  assert train["model"]["config"] == _ok(size_probe, "train_llama_3_2_1b")["model"]["config"]
  assert evaluate["restore_path"] == "gs://BUCKET/runs/llama_3_2_1b/checkpoint_4000"


def test_run_file_requires_the_converted_checkpoint(size_probe):
  """Random weights for a 1B model would be a silent mistake: the run file asks for one."""
  error = size_probe["train_no_checkpoint"]["error"]
  assert error.startswith("ValueError: INITIAL_CHECKPOINT_PATH") and "REQUIRED" in error


@pytest.fixture(scope="module")
def hf_tinies(tmp_path_factory):
  """A tiny random `transformers` model of each family in HF_TINY, saved under
  <root>/<family>_hf by one torch process (one start-up for all three)."""
  hf_reference.require_torch()
  root = tmp_path_factory.mktemp("hf_tinies")
  tokens = np.random.default_rng(0).integers(0, 8064, size=(2, 24)).astype(np.int32)
  hf_reference.run("hf_reference:decoder_logits", {"tokens": tokens}, jobs=[
      {"name": family, "dir": str(root / f"{family}_hf"), "model_type": family,
       "config": config} for family, config in HF_TINY.items()])
  return {family: root / f"{family}_hf" for family in HF_TINY}


def _train(root, hf_dir, family, env, steps):
  """convert --to t5x at STEP (in this process), then t5x.train `steps` steps; returns the
  model dir."""
  from symbol_tuning.checkpoints import convert  # pylint: disable=import-outside-toplevel

  convert.convert(str(hf_dir), str(root / f"{family}_t5x"), "t5x", step=STEP)
  model_dir = root / f"{family}_run"
  t5x_support.run_t5x("train", [f"models/{family}_tiny.gin", "symbol_tuning_bigbench_decoder.gin"], {
      "MODEL_DIR": f"'{model_dir}'",
      "INITIAL_CHECKPOINT_PATH": f"'{root / f'{family}_t5x' / f'checkpoint_{STEP}'}'",
      "FINETUNE_STEPS": steps, "BATCH_SIZE": 2, "utils.SaveCheckpointConfig.period": steps},
                      env)
  return model_dir


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, bigbench_dir, hf_tinies):
  """README's decoder-only t5x block as written, from a folder linking gin/: a tiny random
  Llama -> convert --to t5x -> t5x.train (STEPS steps, batch 2) -> t5x.eval (2 queries per
  task) -> `symbol-tuning eval` (1 query per task) and `convert --to hf` of the checkpoint
  t5x wrote."""
  t5x_support.require_t5x()
  root = tmp_path_factory.mktemp("t5x_decoder")
  (root / "gin").symlink_to(t5x_support.REPO / "gin")
  hf_dir = hf_tinies["llama"]
  bin_dir = os.path.dirname(sys.executable)  # README says python3 / symbol-tuning: the venv's
  env = t5x_support.t5x_env(BIGBENCH_DIR=str(bigbench_dir),
                            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  appended = {"t5x.train": f"--gin.FINETUNE_STEPS={STEPS} --gin.BATCH_SIZE=2",
              "t5x.eval": "--gin.seqio.Evaluator.num_examples=2",
              "eval": "--settings symbols --max_examples 1"}
  for command in readme_support.block("Decoder-only models", 3).commands:
    words = shlex.split(command)
    line = re.sub(r"/checkpoint_300\b", f"/checkpoint_{STEPS}", command)
    line = line.replace("path/to/Llama-3.2-1B", str(hf_dir))
    extra = appended.get(words[2] if words[0] == "python3" else words[3], "")
    code, out, err = t5x_support._run(["bash", "-c", f"{line} {extra}"], root, env, 900, None)  # pylint: disable=protected-access
    assert code == 0, f"{line}\n{(out + err)[-6000:]}"
  model_dir = root / "runs" / "llama_symbol"
  return dict(root=root, hf_dir=hf_dir, model_dir=model_dir, env=env,
              checkpoint=model_dir / f"checkpoint_{STEPS}",
              scores=model_dir / "t5x_eval" / "inference_eval",
              back_hf=root / "runs" / "llama_symbol_hf")


def test_t5x_train_tunes_the_converted_llama(llama_run):
  model_dir = llama_run["model_dir"]
  assert (llama_run["checkpoint"] / "state" / "_METADATA").is_file()
  assert not (model_dir / f"checkpoint_{STEPS + 1}").exists()
  losses = t5x_support.train_metrics(model_dir)
  assert list(losses) == [STEPS] and math.isfinite(losses[STEPS])
  config = " ".join((model_dir / "config.gin").read_text().replace("\\\n", " ").split())
  assert "module = @t5x_module.T5xDecoder()" in config
  assert "feature_converter_cls = @decoder_features.BestFitPrefixLMFeatureConverter" in config
  # The model's config beside the checkpoints (written by t5x_module.decoder_config).
  written = json.loads((model_dir / "model_config.json").read_text())
  assert (written["family"], written["d_model"], written["num_kv_heads"]) == ("llama", 64, 2)
  # Parameters moved from the converted ones.
  from symbol_tuning.checkpoints import convert, flatten  # pylint: disable=import-outside-toplevel

  _, before = convert.load_any(str(llama_run["hf_dir"]))
  _, after = convert.load_any(str(llama_run["checkpoint"]))
  before, after = flatten(before), flatten(after)
  assert set(before) == set(after)
  assert max(float(np.max(np.abs(before[k] - after[k]))) for k in before) > 0


def test_our_cli_reads_the_t5x_checkpoint_with_t5x_eval_scores(llama_run):
  """t5x.eval's log-likelihood of each (prompt, option) == our scorer's, on the checkpoint
  t5x.train wrote, read directly and after `convert --to hf`; `symbol-tuning eval` of it
  wrote its report."""
  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel
  from symbol_tuning.evaluation import scoring  # pylint: disable=import-outside-toplevel

  hf_dir = llama_run["back_hf"]
  assert (llama_run["model_dir"] / "report" / "results.json").is_file()
  vocabulary = vocab.use_vocabulary("local")
  rows = []
  for path in sorted(llama_run["scores"].glob("*-00*.jsonl"))[:4]:
    rows += [json.loads(line) for line in path.read_text().splitlines()[:2]]
  assert len(rows) == 8
  eos = vocabulary.eos_id
  # t5x's PrefixLM features: [BOS 0] prompt EOS answer EOS; the answer (with EOS) is scored.
  requests = [scoring.Request([0] + vocabulary.encode(r["input"]["inputs_pretokenized"]) + [eos],
                              [vocabulary.encode(r["input"]["targets_pretokenized"]) + [eos]])
              for r in rows]
  theirs = np.array([r["score"] for r in rows])
  for source in (str(llama_run["checkpoint"]), str(hf_dir)):
    model = scoring.load_model(source, vocab_size=vocabulary.vocab_size)
    ours = np.array([s[0] for s in scoring.Scorer(model).rank_naive(requests)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def _one_t5x_step(tmp_path, bigbench_dir, hf_dir, family):
  """(config, params) of the checkpoint t5x.train wrote one step after the converted one."""
  t5x_support.require_t5x()
  env = t5x_support.t5x_env(BIGBENCH_DIR=str(bigbench_dir))
  model_dir = _train(tmp_path, hf_dir, family, env, 1)
  losses = t5x_support.train_metrics(model_dir)
  assert list(losses) == [STEP + 1] and math.isfinite(losses[STEP + 1])
  from symbol_tuning.checkpoints import convert  # pylint: disable=import-outside-toplevel

  return convert.load_any(str(model_dir / f"checkpoint_{STEP + 1}"))


def test_t5x_train_tunes_a_converted_qwen2(tmp_path, bigbench_dir, hf_tinies):
  """Qwen2's q/k/v biases and tied embeddings through the same path, one step."""
  config, params = _one_t5x_step(tmp_path, bigbench_dir, hf_tinies["qwen2"], "qwen2")
  assert (config.family, config.qkv_bias, config.tie_embeddings) == ("qwen2", True, True)
  assert "bias" in params["decoder"]["layers_0"]["self_attention"]["query"]


def test_t5x_train_tunes_a_converted_gemma2(tmp_path, bigbench_dir, hf_tinies):
  """Gemma 2's block (local/global layers, soft-capping, sandwich norms) through the same
  path, one step; the checkpoint t5x wrote reads back as Gemma 2."""
  config, params = _one_t5x_step(tmp_path, bigbench_dir, hf_tinies["gemma2"], "gemma2")
  assert (config.family, config.layer_window(0), config.layer_window(1)) == ("gemma2", 8, None)
  assert (config.attn_logit_softcap, config.final_logit_softcap) == (50.0, 30.0)
  assert "post_mlp_layer_norm" in params["decoder"]["layers_1"]


def test_predict_is_refused_in_one_line():
  """t5x generation is not wired to our cache: a clear refusal, not a wrong answer."""
  t5x_support.require_t5x()
  import jax  # pylint: disable=import-outside-toplevel

  from symbol_tuning.models.decoder.config import get_config  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models.decoder import t5x_module  # pylint: disable=import-outside-toplevel

  module = t5x_module.T5xDecoder(get_config("llama-tiny"))
  tokens = np.ones((1, 4), np.int32)
  with pytest.raises(NotImplementedError, match="rank mixture"):
    module.init({"params": jax.random.PRNGKey(0)}, tokens, tokens, prefill=True,
                prefill_lengths=np.array([2]))



def test_convert_round_trip_and_the_config_beside_the_checkpoint(tmp_path):
  """native -> t5x -> native keeps params and config; without model_config.json the error
  names the checkpoint and the ways out, and `--config NAME` reads it."""
  from symbol_tuning.checkpoints import CheckpointError, convert, flatten, save_native  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models import registry  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models.decoder.config import get_config  # pylint: disable=import-outside-toplevel

  config = get_config("llama-tiny", rope_theta=500000.0, norm_epsilon=1e-5)
  params = registry.init_params(config, 3)
  save_native(config, params, str(tmp_path / "native"))
  written = convert.convert(str(tmp_path / "native"), str(tmp_path / "t5x"), "t5x", step=7)
  assert written.endswith("checkpoint_7")
  read_config, read = convert.load_any(written)
  assert read_config == config
  expected = flatten(params)
  assert all(np.array_equal(np.asarray(expected[k]), v) for k, v in flatten(read).items())
  for where in (tmp_path / "t5x", tmp_path / "t5x" / "checkpoint_7"):
    (where / "model_config.json").unlink()
  with pytest.raises(CheckpointError, match=r"checkpoint_7: a checkpoint "
                                            r"without model_config.json.*--config NAME"):
    convert.load_any(written)
  named, _ = convert.load_any(written, get_config("llama-tiny"))
  assert named == get_config("llama-tiny")
