"""The embedded trainer's gin files (gin/local/).

Parsing: each Flan-T5 experiment parses into the paper's setup, layering the mix file
switches the mixture, and the tiny default is offline (it trains in tests/test_trainer.py).

Training: the local twin of each experiment (small and large are base's twin once the CPU
overrides apply: checked, trained once), and the 16% mix on top of base, trains 2 steps
through `symbol-tuning train` on the real 22-dataset 'symbol_tuning' mixture, read from
small synthetic copies of the datasets (SYMBOL_TUNING_DATA_DIR, written from
tasks/tune.json). Only what a CPU cannot run is overridden (CPU_OVERRIDES: model size,
vocabulary, checkpoint, lengths, batch, steps); the experiment's mixture, learning rate,
dropout, mesh and microbatches stay, so xxl runs MESH_MODEL=8 with 2 microbatches on the 8
fake CPU devices of conftest.py.
"""
import json
import math
import pathlib

import datasets
import gin
import pytest
import seqio

import synthetic_data

from symbol_tuning import cli
from symbol_tuning.data import pipeline
from symbol_tuning.commands import train as train_cmd
from symbol_tuning.training import trainer as trainer_lib

SIZES = ("small", "base", "large", "xl", "xxl")


pytestmark = pytest.mark.usefixtures("clean_gin")


def parse(files, bindings=()):
  bindings = ["MODEL_DIR = '/tmp/unused'"] + list(bindings)
  train_cmd.parse_gin(list(files), bindings, "")
  train_cmd.check_macros(bindings)
  return trainer_lib.TrainConfig()  # pylint: disable=no-value-for-parameter


@pytest.mark.parametrize("size", SIZES)
def test_flan_t5_experiments_have_the_papers_setup(size):
  cfg = parse([f"local/symbol_tuning_flan_t5_{size}.gin"])
  assert cfg.mixture_or_task_name == "symbol_tuning"
  assert cfg.task_feature_lengths == {"inputs": 2048, "targets": 512}
  assert cfg.batch_size == 32 and cfg.dropout_rate == 0.05
  assert (cfg.train_steps, cfg.learning_rate) == ((1000, 0.001) if size == "xxl" else (4000, 0.003))
  assert cfg.model_size == size and cfg.vocabulary == "flan_t5"
  assert cfg.initial_checkpoint_path.startswith(f"gs://t5-data/pretrained_models/t5x/flan_t5_{size}/")
  assert cfg.checkpoint_period == 1000


def test_mix_file_switches_to_a_registered_mixture(bigbench_dir):
  cfg = parse(["local/symbol_tuning_flan_t5_base.gin", "local/symbol_tuning_mix.gin"],
              ["SYMBOL_FRACTION = 0.5", "SYMBOL_MIXTURE = 'symbol_tuning_bigbench'",
               "INSTRUCTION_MIXTURE = 'instruction_tuning_bigbench'"])
  assert cfg.mixture_or_task_name == "symbol_tuning_bigbench_50pct_instruction_tuning_bigbench"
  assert cfg.mixture_or_task_name in seqio.MixtureRegistry.names()


def test_tiny_default_is_offline():
  cfg = parse(["local/symbol_tuning_bigbench_tiny.gin"])
  assert cfg.mixture_or_task_name == "symbol_tuning_bigbench"
  assert cfg.model_size == "tiny" and cfg.vocabulary == "local"
  assert cfg.initial_checkpoint_path is None


# ----------------------------------------------------------------------------------------
# The local twins train: 2 steps of each experiment through the CLI.
# ----------------------------------------------------------------------------------------
ROWS_PER_DATASET = 40
# A CPU cannot run Flan-T5 at 2048/512 tokens, batch 32: the tiny random model (offline
# vocabulary, no checkpoint), short prompts, the smallest batch the 8-way data axis takes.
CPU_OVERRIDES = ("--gin.MODEL_SIZE='tiny'", "--gin.VOCABULARY='local'",
                 "--gin.INITIAL_CHECKPOINT_PATH=None",
                 "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 16}",
                 "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=2", "--gin.CHECKPOINT_PERIOD=2")


@pytest.fixture(scope="module")
def tune_data_dir(tmp_path_factory):
  """SYMBOL_TUNING_DATA_DIR with synthetic copies of every dataset in tasks/tune.json:
  <key>/train.jsonl rows with each input field a short distinct text and the label field
  cycling through the entry's raw class values (label_values, else 0..n-1)."""
  root = synthetic_data.write_tune_copies(tmp_path_factory.mktemp("tune_data"),
                                          ROWS_PER_DATASET)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SYMBOL_TUNING_DATA_DIR", str(root))
    # `datasets` converts each JSONL file into its cache: keep that out of ~/.cache.
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))
    pipeline.clear_caches()
    try:
      yield root
    finally:
      pipeline.clear_caches()


def train_twin(model_dir, gin_files, bindings=()):
  """Exit code of `symbol-tuning train` on the files, with the CPU overrides."""
  return cli.main(["train", *(f"--gin_file={f}" for f in gin_files),
                   f"--gin.MODEL_DIR='{model_dir}'", *CPU_OVERRIDES,
                   *(f"--gin.{b}" for b in bindings), "--no_progress"])


def checkpoint_meshes(checkpoint: pathlib.Path):
  """{(data, model)} of the mesh every saved array was sharded on, and whether any array
  names the model axis in its partition spec (from orbax's _sharding record)."""
  records = [json.loads(v) for v in
             json.loads((checkpoint / "state" / "_sharding").read_text()).values()]
  meshes = {tuple(r["shape"]) for r in records}
  on_model_axis = any("model" in json.dumps(r["partition_spec"]) for r in records)
  return meshes, on_model_axis


def check_run(model_dir: pathlib.Path, code, err, want: trainer_lib.TrainConfig,
              mixture: str):
  """What a 2-step run of the experiment `want` must leave in MODEL_DIR."""
  assert code == 0, err
  assert "trained to step 2" in err, err
  # A checkpoint for step 2, of the experiment's mixture, on the experiment's mesh.
  assert sorted(p.name for p in model_dir.glob("checkpoint_*")) == ["checkpoint_2"]
  meta = json.loads((model_dir / "checkpoint_2" / "meta" / "metadata").read_text())
  assert meta["mixture_or_task_name"] == mixture
  assert meta["model_config"]["dropout_rate"] == want.dropout_rate
  meshes, on_model_axis = checkpoint_meshes(model_dir / "checkpoint_2")
  assert meshes == {(8 // want.mesh_model, want.mesh_model)}
  if want.mesh_model > 1:  # model parallel: vocab, mlp and joined_kv split over it
    assert on_model_axis
  # The operative config records the experiment's own settings.
  operative = (model_dir / "config.gin").read_text()
  for macro, value in (("LEARNING_RATE", want.learning_rate),
                       ("DROPOUT_RATE", want.dropout_rate),
                       ("MESH_MODEL", want.mesh_model),
                       ("NUM_MICROBATCHES", want.num_microbatches),
                       ("TRAIN_STEPS", 2)):
    assert f"\n{macro} = {value!r}\n" in operative, (macro, value)
  # Finite losses, logged at the experiment's learning rate; TensorBoard events too.
  rows = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert rows and rows[-1]["step"] == 2
  for row in rows:
    assert math.isfinite(row["loss"]) and row["loss"] > 0 and math.isfinite(row["grad_norm"])
    assert row["learning_rate"] == want.learning_rate and row["target_tokens"] > 0
  assert list((model_dir / "train").glob("events.out.tfevents.*"))


def experiment(files, bindings=()):
  """The experiment's own TrainConfig, as its gin files set it (no overrides)."""
  try:
    return parse(files, [b.replace("=", " = ", 1) for b in bindings])
  finally:
    gin.clear_config()


def twin_config(size):
  """The TrainConfig of `size`'s local twin: its experiment file with the CPU overrides."""
  return experiment([f"local/symbol_tuning_flan_t5_{size}.gin"],
                    [o[len("--gin."):] for o in CPU_OVERRIDES])


# small, base and large differ only in what the CPU overrides replace (model, checkpoint,
# vocabulary): their twins are one run, trained once as base (checked below).
TRAINED_SIZES = ("base", "xl", "xxl")


def test_small_and_large_twins_are_the_base_twin():
  base = twin_config("base")
  assert twin_config("small") == base and twin_config("large") == base
  assert twin_config("xl") != base and twin_config("xxl") != base


@pytest.mark.parametrize("size", TRAINED_SIZES)
def test_local_twin_trains_two_steps(size, tmp_path, capsys, tune_data_dir):
  files = [f"local/symbol_tuning_flan_t5_{size}.gin"]
  want = experiment(files)
  assert want.mixture_or_task_name == "symbol_tuning"
  code = train_twin(tmp_path, files)
  err = capsys.readouterr().err
  check_run(tmp_path, code, err, want, "symbol_tuning")
  if size == "xxl":  # the tiny model's 4 heads cannot split 8 ways: replicated, not fatal
    assert "mesh: heads (4) replicated, the model axis (8) does not divide it" in err


def test_mix_twin_trains_two_steps(tmp_path, capsys, tune_data_dir):
  files = ["local/symbol_tuning_flan_t5_base.gin", "local/symbol_tuning_mix.gin"]
  bindings = ["SYMBOL_FRACTION=0.16"]
  want = experiment(files, bindings)
  name = "symbol_tuning_16pct_instruction_tuning"
  assert want.mixture_or_task_name == name
  code = train_twin(tmp_path, files, bindings)
  check_run(tmp_path, code, capsys.readouterr().err, want, name)
  operative = (tmp_path / "config.gin").read_text()
  assert "SYMBOL_FRACTION = 0.16" in operative
  assert "INSTRUCTION_MIXTURE = 'instruction_tuning'" in operative
  # 16% of the mixture is symbol data from the same 22 local copies, 84% instructions.
  mixture = seqio.get_mixture_or_task(name)
  rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
  assert len(rates) == 44
  symbol = sum(r for t, r in rates.items() if t.startswith("symbol_tuning.tune."))
  assert symbol / sum(rates.values()) == pytest.approx(0.16)
