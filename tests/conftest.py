"""Test environment: quiet TF, CPU jax with 8 fake devices, offline vocabulary and data.

BIG-bench comes from $BIGBENCH_DIR when set, else from the package's own archive (what a
new user gets): no ../shared is needed.

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

import pytest  # noqa: E402


def pytest_configure(config):
  del config
  from absl import flags  # absl-based code reads FLAGS; pytest parses its own flags

  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def bigbench_dir() -> pathlib.Path:
  """The real BIG-bench tasks the library reads: $BIGBENCH_DIR, else the package's archive
  (extracted into the cache on first use), for tests that hand the folder to a subprocess."""
  from symbol_tuning.data.sources import bigbench  # pylint: disable=import-outside-toplevel

  if os.environ.get("BIGBENCH_DIR"):
    return pathlib.Path(os.environ["BIGBENCH_DIR"])
  return bigbench.shipped_root()


@pytest.fixture(autouse=True)
def _restore_vocabulary_choice():
  """`cli.main(["--vocab", X, ...])` makes X the process's vocabulary (as the CLI should);
  reset the choice after each test, so one test's vocabulary never reaches the next."""
  yield
  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel

  vocab.set_vocabulary(None)


@pytest.fixture(autouse=True)
def _restore_data_source_choice():
  """`cli.main(["--source", "tfds", ...])` selects TFDS for the process (as the CLI should);
  reset the choice after each test, as the vocabulary's."""
  yield
  from symbol_tuning.data import sources  # pylint: disable=import-outside-toplevel

  if sources.select():  # changed back: prompt builders may hold the test's data
    from symbol_tuning.data import pipeline  # pylint: disable=import-outside-toplevel

    pipeline.clear_caches()


@pytest.fixture
def clean_gin():
  """A gin config cleared before and after the test (modules that parse gin use it for
  every test: `pytestmark = pytest.mark.usefixtures("clean_gin")`)."""
  import gin  # pylint: disable=import-outside-toplevel

  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
  """$SYMBOL_TUNING_DATA_DIR at an empty folder for the test's local copies, with the
  pipeline's caches cleared before and after (loaded splits are cached per process)."""
  from symbol_tuning.data import pipeline  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  pipeline.clear_caches()
  yield tmp_path
  pipeline.clear_caches()
