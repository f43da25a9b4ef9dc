"""The embedded trainer's gin files: each parses into the paper's setup, and layering the
mix file switches the mixture; the tiny default trains in tests/test_trainer.py."""
import gin
import pytest
import seqio

from symbol_tuning.commands import train as train_cmd
from symbol_tuning.training import trainer as trainer_lib

SIZES = ("small", "base", "large", "xl", "xxl")


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


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
