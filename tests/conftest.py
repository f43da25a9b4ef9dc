"""Test environment: quiet TF, CPU jax with 8 fake devices, offline vocabulary and data.

Everything here is set before TensorFlow or jax is imported by any test module.
"""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("SYMBOL_TUNING_VOCAB", "local")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from symbol_tuning import resources  # noqa: E402  (after the environment is set)

BIGBENCH_DIR = resources.shared_dir() / "data" / "bigbench"
if BIGBENCH_DIR.is_dir():
  os.environ.setdefault("BIGBENCH_DIR", str(BIGBENCH_DIR))

import pytest  # noqa: E402


def pytest_configure(config):
  del config
  from absl import flags  # absl-based code reads FLAGS; pytest parses its own flags

  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def bigbench_dir() -> pathlib.Path:
  """The real BIG-bench suite in ../shared (SYMBOL_TUNING_SHARED moves it)."""
  path = pathlib.Path(os.environ.get("BIGBENCH_DIR", BIGBENCH_DIR))
  if not path.is_dir():
    pytest.fail(f"the BIG-bench data is missing at {path}: set SYMBOL_TUNING_SHARED to the "
                "workspace's shared/ folder or BIGBENCH_DIR to a benchmark_tasks copy")
  return path


@pytest.fixture(autouse=True)
def _restore_vocabulary_choice():
  """`cli.main(["--vocab", X, ...])` sets $SYMBOL_TUNING_VOCAB for the process (as the CLI
  should); put it and the module's choice back after each test, so one test's vocabulary
  never reaches the next (or a notebook kernel it starts)."""
  saved = os.environ.get("SYMBOL_TUNING_VOCAB")
  yield
  if saved is None:
    os.environ.pop("SYMBOL_TUNING_VOCAB", None)
  else:
    os.environ["SYMBOL_TUNING_VOCAB"] = saved
  from symbol_tuning import vocab  # pylint: disable=import-outside-toplevel

  vocab.set_vocabulary(None)


@pytest.fixture
def clean_gin():
  """A gin config cleared before and after the test (modules that parse gin use it for
  every test: `pytestmark = pytest.mark.usefixtures("clean_gin")`)."""
  import gin  # pylint: disable=import-outside-toplevel

  gin.clear_config()
  yield
  gin.clear_config()
