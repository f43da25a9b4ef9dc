"""Tasks cached by seqio's own cache_tasks_main on Apache Beam's DirectRunner (issue #20).

The 18 BIG-bench tuning tasks (a copy cut to a few examples per label, so Beam runs in
seconds) are cached at 1024/32 tokens by README's command; then the cache is read back by
seqio, by our trainer and by t5x.train, and holds exactly the prompts of the uncached
pipeline at seed 0. A broken dataset copy stops cache_tasks_main with one line and leaves
nothing that a later run would read as a cache.
"""
import collections
import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import seqio

import readme_support
import t5x_support

LENGTHS = {"inputs": 1024, "targets": 32}  # every split of the cut copy has prompts that fit
PER_LABEL = 12  # examples per label kept in the cut copy
TASKS = r"symbol_tuning\.bigbench\.[^.]*_i1024_t32"
# README's commands: the DirectRunner one this file runs, and the Dataflow one it checks.
DIRECT = ("Data at scale", 0)
DATAFLOW = ("Data at scale", 1)


def require_beam() -> None:
  if importlib.util.find_spec("apache_beam") is None:
    reason = "apache-beam is not installed: pip install -e '.[beam]'"
    if os.environ.get("CI") == "true":
      pytest.fail(f"CI caches tasks with Beam, but {reason}")
    pytest.skip(reason)


def _words(section_index) -> list[str]:
  (command,) = readme_support.block(*section_index).commands
  return shlex.split(command)


def run_cache(out_dir, data: pathlib.Path, tasks: str | None = None, **env):
  """README's DirectRunner command (Data at scale) as written, into `out_dir`, on `data`,
  with `tasks` instead of its pattern and `env` over its variables if given."""
  words = _words(DIRECT)
  start = words.index("python")
  env = t5x_support.t5x_env(BIGBENCH_DIR=str(data),
                            **{**dict(w.split("=", 1) for w in words[:start]), **env})
  args = [w.replace("$PWD/seqio_cache", str(out_dir)) for w in words[start + 1:]]
  if tasks:
    args = [f"--tasks={tasks}" if a.startswith("--tasks=") else a for a in args]
  return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                        timeout=900, cwd=t5x_support.REPO, check=False)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, bigbench_dir):
  require_beam()
  root = tmp_path_factory.mktemp("beam")
  del bigbench_dir  # the tasks' source: read by write_cut_copy
  from symbol_tuning.data.sources import bigbench

  data = bigbench.write_cut_copy(root / "bigbench", PER_LABEL)
  out = root / "cache"
  proc = run_cache(out, data)
  assert proc.returncode == 0, proc.stderr[-6000:]
  return {"root": root, "data": data, "out": out}


def _examples(ds) -> collections.Counter:
  return collections.Counter(
      (ex["task"].decode(), int(ex["query"]), ex["inputs_pretokenized"].decode(),
       tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist()))
      for ex in ds.as_numpy_iterator())


@pytest.fixture
def read_cache(cached, monkeypatch):
  """This process reads the cut copy and finds the cache (seqio's global cache dirs)."""
  from symbol_tuning.data import caching, pipeline
  import symbol_tuning.data.tasks  # pylint: disable=unused-import

  monkeypatch.setenv("BIGBENCH_DIR", str(cached["data"]))
  pipeline.clear_caches()
  before = list(seqio.utils.get_global_cache_dirs())
  seqio.add_global_cache_dirs([str(cached["out"])])
  caching.register_cached("symbol_tuning_bigbench", LENGTHS, splits=("train",))
  yield cached
  seqio.set_global_cache_dirs(before)
  pipeline.clear_caches()


def test_every_task_split_is_cached(cached):
  dirs = sorted(p.name for p in cached["out"].iterdir())
  assert len(dirs) == 18 and all(re.fullmatch(TASKS, d) for d in dirs), dirs
  for d in dirs:
    files = sorted(p.name for p in (cached["out"] / d).iterdir())
    # The train split, which the mixture trains on (cached_tasks).
    assert "COMPLETED" in files and "info.train.json" in files, files


def test_the_cache_holds_the_uncached_prompts_of_seed_0(read_cache):
  from symbol_tuning.data import caching

  for task in seqio.get_mixture_or_task("symbol_tuning_bigbench").tasks:
    twin = seqio.get_mixture_or_task(caching.cached_name(task.name, LENGTHS))
    assert list(twin.splits) == ["train"]
    got = _examples(twin.get_dataset(LENGTHS, split="train", use_cached=True, shuffle=False))
    want = _examples(task.get_dataset(LENGTHS, split="train", shuffle=False,
                                      seed=caching.CACHE_SEED, num_epochs=1))
    assert got == want and want, task.name
  with pytest.raises(ValueError, match="holds prompts fitted to"):
    twin.get_dataset({"inputs": 512, "targets": 32}, split="train", use_cached=True)


def test_our_trainer_reads_the_cache(read_cache):
  """The trainer's packed rows from the cached mixture hold only cached prompts (their
  input ids, segment by segment), and every task of the mixture shows up."""
  from symbol_tuning.training import data

  twin = seqio.get_mixture_or_task("symbol_tuning_bigbench_i1024_t32")
  cached_ids = set()
  for task in twin.tasks:
    ds = task.get_dataset(LENGTHS, split="train", use_cached=True, shuffle=False)
    cached_ids |= {tuple(ex["inputs"].tolist()) for ex in ds.as_numpy_iterator()}
  cfg = data.DataConfig("symbol_tuning_bigbench_i1024_t32", LENGTHS, 8, use_cached=True)
  it = data.host_batches(cfg)
  seen = 0
  for _ in range(6):
    batch = next(it)
    for row, segments in zip(batch["encoder_input_tokens"], batch["encoder_segment_ids"]):
      for s in set(segments.tolist()) - {0}:
        assert tuple(row[segments == s].tolist()) in cached_ids
        seen += 1
  assert seen >= 6 * 8


@pytest.mark.usefixtures("clean_gin")
def test_train_command_reads_the_cache(read_cache, tmp_path, monkeypatch, capsys):
  """`symbol-tuning train` with gin/local/cached.gin: the cache's folder from SEQIO_CACHE_DIRS
  alone (seqio's global cache dirs emptied), no raw data to fall back on."""
  from symbol_tuning import cli
  from symbol_tuning.data import pipeline

  seqio.set_global_cache_dirs([])
  monkeypatch.setenv("BIGBENCH_DIR", str(tmp_path / "no_data"))
  pipeline.clear_caches()
  code = cli.main(["train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
                   "--gin_file=local/cached.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                   f"--gin.SEQIO_CACHE_DIRS=['{read_cache['out']}']",
                   f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", "--gin.TRAIN_STEPS=1",
                   "--gin.BATCH_SIZE=8", "--no_progress"])
  err = capsys.readouterr().err
  assert code == 0, err[-3000:]
  assert "trained to step 1" in err
  config = (tmp_path / "run" / "config.gin").read_text()
  assert "USE_CACHED_TASKS = True" in config


@pytest.mark.usefixtures("clean_gin")
def test_train_command_without_the_cache_is_one_line(tmp_path, capsys, bigbench_dir):
  from symbol_tuning import cli

  del bigbench_dir
  before = list(seqio.utils.get_global_cache_dirs())
  try:
    code = cli.main(["train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
                     "--gin_file=local/cached.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                     f"--gin.SEQIO_CACHE_DIRS=['{tmp_path / 'no_cache'}']",
                     # Lengths no other test caches (seqio keeps a task's cache dir once found).
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 32}",
                     "--gin.TRAIN_STEPS=1",
                     "--no_progress"])
  finally:
    seqio.set_global_cache_dirs(before)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, err
  assert err[0].startswith("symbol-tuning train: error: USE_CACHED_TASKS: 18 task(s) of "
                           "'symbol_tuning_bigbench_i512_t32' are not cached")
  assert str(tmp_path / "no_cache") in err[0] and "cache_tasks_main" in err[0]


def test_t5x_trains_on_the_cache(cached, tmp_path):
  """t5x.train with USE_CACHED_TASKS (gin/t5x/cached.gin) reads the cached mixture through
  --seqio_additional_cache_dirs (one step of the tiny twin from scratch)."""
  t5x_support.require_t5x()
  cmd = t5x_support.t5x_command("train", ["symbol_tuning_bigbench_tiny.gin", "cached.gin"], {
      "MODEL_DIR": f"'{tmp_path / 'run'}'",
      "MIXTURE_OR_TASK_NAME": "'symbol_tuning_bigbench_i1024_t32'",
      "FINETUNE_STEPS": 1, "TASK_FEATURE_LENGTHS": "{'inputs': 1024, 'targets': 32}",
      "utils.SaveCheckpointConfig.period": 1})
  cmd.insert(-1, f"--seqio_additional_cache_dirs={cached['out']}")
  env = t5x_support.t5x_env(BIGBENCH_DIR=str(tmp_path / "no_data"),
                            SYMBOL_TUNING_CACHE_LENGTHS="1024:32")
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                        cwd=t5x_support.REPO, check=False)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
  # It read the cache: the raw data (BIGBENCH_DIR) does not exist.
  assert "is cached at" in proc.stdout + proc.stderr
  assert (tmp_path / "run" / "checkpoint_1").is_dir()


def test_a_broken_copy_is_one_line_and_leaves_no_cache(cached, tmp_path):
  data = tmp_path / "bigbench"
  shutil.copytree(cached["data"], data)
  (data / "navigate" / "task.json").write_text('{"examples": [')
  out = tmp_path / "cache"
  proc = run_cache(out, data, r"symbol_tuning\.bigbench\.(navigate|winowhy)_i1024_t32")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("cache_tasks_main: BIG-bench task 'navigate'") and "JSON" in last
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  # Nothing a later run reads as a cache: seqio reads only directories with COMPLETED.
  assert not list(out.rglob("COMPLETED")) if out.exists() else True


def test_the_dataflow_command_is_the_direct_one_on_the_full_mixture():
  """README's Dataflow command: the DirectRunner command's flags but the pattern, output and
  runner; its pattern selects the 22 tasks of symbol_tuning at the paper's lengths."""
  import symbol_tuning.data.cached_tasks  # pylint: disable=unused-import

  direct, dataflow = _words(DIRECT), _words(DATAFLOW)
  flags = lambda words, skip: sorted(w for w in words[words.index("-m"):]
                                     if not w.startswith(skip))
  skip = ("--tasks=", "--output_cache_dir=", "--pipeline_options=", "--min_shards=")
  assert flags(direct, skip) == flags(dataflow, skip)
  options = next(w for w in dataflow if w.startswith("--pipeline_options="))
  assert "--runner=DataflowRunner" in options and "--setup_file=./setup.py" in options
  pattern = re.compile(next(w for w in dataflow if w.startswith("--tasks="))[8:] + r"\Z")
  selected = sorted(n for n in seqio.TaskRegistry.names() if pattern.match(n))
  mixture = seqio.get_mixture_or_task("symbol_tuning_i2048_t512")
  assert selected == sorted(t.name for t in mixture.tasks) and len(selected) == 22


def test_a_job_that_fails_inside_beam_is_one_line_and_marks_nothing_cached(cached, tmp_path):
  """At 512/32 no prompt of the cut multiemo_hotels_text_en train split fits: its Beam
  worker stops the job (after navigate's files may be written); no task is marked cached."""
  out = tmp_path / "cache"
  proc = run_cache(out, cached["data"],
                   r"symbol_tuning\.bigbench\.(navigate|multiemo_hotels_text_en)_i512_t32",
                   SYMBOL_TUNING_CACHE_LENGTHS="512:32")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("cache_tasks_main: task symbol_tuning.bigbench.multiemo_hotels_text_en"
                         " (train): none of its prompts fits 512 tokens"), last
  assert not list(out.rglob("COMPLETED")) if out.exists() else True
  # seqio finds no cache for either task there.
  from symbol_tuning.data import caching

  before = list(seqio.utils.get_global_cache_dirs())
  seqio.add_global_cache_dirs([str(out)])
  try:
    for name in ("navigate", "multiemo_hotels_text_en"):
      task = seqio.get_mixture_or_task(caching.register_cached(
          f"symbol_tuning.bigbench.{name}", {"inputs": 512, "targets": 32},
          splits=("train",)))
      assert task.cache_dir is None
  finally:
    seqio.set_global_cache_dirs(before)


def test_twin_names_and_lengths_setting(monkeypatch):
  from symbol_tuning import settings
  from symbol_tuning.data import caching

  assert caching.cached_name("m", {"inputs": 2048, "targets": 512}) == "m_i2048_t512"
  assert caching.cached_name("m", {"targets": 544}) == "m_544"
  monkeypatch.setenv("SYMBOL_TUNING_CACHE_LENGTHS", "1024:32, 2048:512")
  assert settings.cache_lengths() == [{"inputs": 1024, "targets": 32},
                                      {"inputs": 2048, "targets": 512}]
  monkeypatch.setenv("SYMBOL_TUNING_CACHE_LENGTHS", "1024")
  with pytest.raises(ValueError, match="'1024' is not INPUTS:TARGETS"):
    settings.cache_lengths()
  with pytest.raises(ValueError, match="does not build prompts"):
    import symbol_tuning.data.tasks  # pylint: disable=unused-import

    caching.register_cached("symbol_tuning.list_functions.c001", {"inputs": 64, "targets": 8})
