"""Test environment: quiet TF, CPU jax with 8 fake devices, offline vocabulary and data.

BIG-bench comes from $BIGBENCH_DIR when set, else from the package's own archive (what a
new user gets): no ../shared is needed.

Everything here is set before TensorFlow or jax is imported by any test module.
"""
import os
import pathlib
import shutil
import tempfile

from xla_flags import xla_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", xla_flags(8))  # tests/xla_flags.py: 8 devices, fast compiles
os.environ.setdefault("SYMBOL_TUNING_VOCAB", "local")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One persistent XLA compilation cache for the whole run, fresh for it: both pytest-xdist
# workers and every process they start (train commands, t5x binaries, the multi-host runs)
# compile the same tiny programs again and again; a hit loads the executable XLA compiled
# the first time (the same executable, so the same numbers). The first process to import
# this file (pytest's main process) makes the folder, the workers and subprocesses inherit
# it through the environment, and the main process removes it at the end.
_XLA_CACHE_MADE_HERE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _XLA_CACHE_MADE_HERE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="symbol_tuning_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402


def pytest_configure(config):
  del config
  from absl import flags  # absl-based code reads FLAGS; pytest parses its own flags

  flags.FLAGS.mark_as_parsed()


# Modules whose module-scoped fixtures are expensive (t5x and Beam runs, torch models): each
# runs on one worker, so a fixture is built once per run, not once per worker that happens to
# get one of its tests. (xdist's own `--dist loadgroup` does not group under pytest 9: it
# renames items through a field pytest 9 no longer reads.)
SHARED_FIXTURE_MODULES = ("test_caching", "test_checkpoints", "test_determinism", "test_gcs",
                          "test_gin_local", "test_gin_t5x", "test_rope", "test_t5x_binaries",
                          "test_t5x_decoder")


# Modules of long single tests (training runs, the demo, two-host jobs), in order of their
# total time: their tests are collected first, so the workers hand them out before the many
# short tests, which then even out the end (in collection order the trainer's 86 s and 43 s
# tests came last, and one worker idled while the other ran them).
LONG_TESTS_FIRST = ("test_trainer", "test_demo", "test_model", "test_multihost", "test_scoring",
                    "test_notebook", "test_readme")


def pytest_collection_modifyitems(items):
  """Moves LONG_TESTS_FIRST's tests to the front (a stable sort: the same order on every
  worker, as xdist requires)."""
  def rank(item):
    stem = item.path.stem
    return LONG_TESTS_FIRST.index(stem) if stem in LONG_TESTS_FIRST else len(LONG_TESTS_FIRST)

  items.sort(key=rank)


def pytest_xdist_make_scheduler(config, log):
  """xdist's scope scheduling with one scope per module above and one per test elsewhere;
  the biggest scopes are handed out first, then single tests as workers free up."""
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

  class ModuleGroups(LoadScopeScheduling):

    def _split_scope(self, nodeid: str) -> str:
      module = nodeid.split("::", 1)[0]
      return module if pathlib.PurePath(module).stem in SHARED_FIXTURE_MODULES else nodeid

  return ModuleGroups(config, log)


def pytest_unconfigure(config):
  del config
  if _XLA_CACHE_MADE_HERE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


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
