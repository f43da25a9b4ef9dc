"""Prompt worker processes build exactly what the main process builds, start without
TensorFlow, report a dead worker clearly, and follow the environment and the vocabulary."""
import json
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import seqio

import symbol_tuning.data.tasks  # noqa: F401  (registers)
from symbol_tuning.data import pipeline, prompt_builder, prompt_workers, tokens, vocab

SEQIO_TEST_SPM = os.path.join(os.path.dirname(seqio.__file__),
                              "test_data/sentencepiece/sentencepiece.model")


@pytest.fixture(autouse=True)
def _no_pools_left():
  yield
  prompt_workers.close_all()


def _spec(task: str):
  return seqio.get_mixture_or_task(task).source.spec


def _same(a: tuple, b: tuple) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.dtype == y.dtype and np.array_equal(x, y)


def test_workers_import_neither_tensorflow_nor_seqio():
  code = ("import sys, symbol_tuning.data.prompt_workers; "
          "print(sorted(m for m in ('tensorflow', 'seqio', 'jax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("vocab_path", ["local", SEQIO_TEST_SPM])
def test_portable_tokenizer_encodes_as_the_seqio_vocabulary(vocab_path):
  vocabulary = vocab._make(vocab_path)
  portable = vocab.tokenizer_of(vocabulary)
  rebuilt = type(portable)(portable.kind, portable.source)  # as a worker loads it
  texts = ["X = Turn left. Take 3 steps.\nY = 8270", "Always face forward. 8ab",
           "Sentence 1: ünïcödé — “quotes”"]
  for text in texts:
    assert rebuilt.EncodeAsIds(text) == vocabulary.tokenizer.EncodeAsIds(text)
  assert rebuilt.EncodeAsIds(texts) == [vocabulary.tokenizer.EncodeAsIds(t) for t in texts]


@pytest.mark.parametrize("task,split,model_length,eos", [
    ("symbol_tuning.bigbench.navigate", "train", None, (1, 2048, 512)),
    # vitaminc at 320 tokens: some prompts cannot fit and are left out.
    ("symbol_tuning.bigbench.vitaminc_fact_verification", "train", None, (1, 320, 4)),
    ("symbol_tuning.eval_bigbench.anachronisms.flipped", "validation", None, None),
    ("symbol_tuning.bigbench.navigate", "train", 384, (1, None, 384)),  # decoder-only
])
def test_a_worker_builds_what_this_process_builds(bigbench_dir, task, split, model_length,
                                                  eos):
  spec = _spec(task)
  budget = (eos[1] - 1) if eos and eos[1] else 2047
  positions = np.arange(40, dtype=np.int32) % len(prompt_builder.queries(spec, split))
  seeds = np.stack([np.arange(40), np.arange(40) * 7 + 3], axis=1).astype(np.int32)
  here = prompt_builder.build_batch(pipeline.PromptBuilder(spec, split, budget), positions,
                                    seeds, model_length, eos)
  pool = prompt_workers.pool(2, vocab.tokenizer_of())
  there = pool.build_batch(spec, split, budget, positions, seeds, model_length, eos)
  _same(here, there)
  kept = here[0]
  assert 0 < len(kept) <= 40
  if "vitaminc" in task:
    assert len(kept) < 40  # the case exercises prompts that are left out
  if eos:
    ends = np.cumsum(here[4]) - 1
    assert np.all(here[3][ends] == 1)  # every prompt's ids end with EOS
  assert json.loads(here[8][0])["options"]  # labels_json


def _hf_tokenizer_dir(path, special_tokens=("<pad>", "</s>")):
  """A small byte-level BPE tokenizer.json (+ config naming EOS) in `path`."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(["Input: the cat sat", "Output: 42 foo bar"] * 20, trainers.BpeTrainer(
      vocab_size=280, special_tokens=list(special_tokens),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  path.mkdir(parents=True, exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
  return path


def test_token_cache_keeps_tokenizers_apart(tmp_path):
  # Two HF tokenizers whose ids differ by one (an extra special token first), tokenizing
  # the same texts in one process: each must get its own ids, not the other's cached ones.
  # (Keyed by path or by texts alone, the second would read the first's ids.)
  texts = ["Input: the cat sat", "Output: 42 foo bar", "a new text"]
  got = []
  for i, specials in enumerate([("<pad>", "</s>"), ("<unk>", "<pad>", "</s>")]):
    tokenizer = vocab.tokenizer_of(vocab._make(str(_hf_tokenizer_dir(tmp_path / str(i),
                                                                      specials))))
    encoder = tokens.PieceEncoder(tokenizer)
    encoder.prime(texts)
    got.append([list(encoder(t)) for t in texts])
    assert got[-1] == [tokenizer.EncodeAsIds(t) for t in texts]
  assert got[0] != got[1]
  # A tokenizer rewritten at the same path is a new tokenizer too.
  same_path = tmp_path / "rewritten"
  first = tokens.Tokenizer("hf", str(_hf_tokenizer_dir(same_path) / "tokenizer.json")).digest
  _hf_tokenizer_dir(same_path, ("<unk>", "<pad>", "</s>"))
  assert tokens.Tokenizer("hf", str(same_path / "tokenizer.json")).digest != first


def test_hf_tokenizer_vocabularies_work_in_workers(tmp_path, bigbench_dir):
  vocabulary = vocab._make(str(_hf_tokenizer_dir(tmp_path)))
  spec = _spec("symbol_tuning.bigbench.navigate")
  positions, seeds = np.arange(8, dtype=np.int32), np.zeros((8, 2), np.int32)
  here = prompt_builder.build_batch(
      prompt_builder.PromptBuilder(spec, "train", 1023, vocab.tokenizer_of(vocabulary)),
      positions, seeds, None, (1, 1024, 16))
  there = prompt_workers.pool(1, vocab.tokenizer_of(vocabulary)).build_batch(
      spec, "train", 1023, positions, seeds, None, (1, 1024, 16))
  _same(here, there)


def test_a_dead_worker_is_a_clear_error_and_the_pool_recovers(bigbench_dir):
  spec = _spec("symbol_tuning.bigbench.navigate")
  pool = prompt_workers.pool(1, vocab.tokenizer_of())
  args = (spec, "train", 2047, np.arange(4, dtype=np.int32), np.zeros((4, 2), np.int32))
  first = pool.build_batch(*args)
  dead = pool.pids()[0]
  os.kill(dead, signal.SIGKILL)
  pool._workers[0].process.wait()  # pylint: disable=protected-access
  with pytest.raises(prompt_workers.PromptWorkerError,
                     match=r"exited \(code -9\) while building prompts of "
                           r"symbol_tuning\.bigbench\.navigate.*SYMBOL_TUNING_PROMPT_WORKERS=0"):
    pool.build_batch(*args)
  _same(first, pool.build_batch(*args))  # a fresh worker took its place
  assert pool.pids() != [dead] and prompt_workers.worker_pids() == pool.pids()


def test_a_worker_whose_main_process_is_gone_exits_quietly(bigbench_dir):
  # The main process ended (or was killed) with a request in flight: the worker's reply
  # finds a broken pipe, and it exits without a traceback on the shared stderr.
  worker = subprocess.Popen([sys.executable, "-m", "symbol_tuning.data.prompt_workers"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
  request = (_spec("symbol_tuning.bigbench.navigate"), "train", 2047,
             np.arange(4, dtype=np.int32), np.zeros((4, 2), np.int32), None, None)
  worker.stdout.close()  # nobody will read the reply
  pickle.dump(vocab.tokenizer_of(), worker.stdin)
  pickle.dump(request, worker.stdin)
  worker.stdin.close()
  assert worker.wait(timeout=60) == 0
  assert worker.stderr.read().decode().strip() == ""


def test_a_changed_environment_starts_new_workers(monkeypatch):
  tokenizer = vocab.tokenizer_of()
  first = prompt_workers.pool(1, tokenizer)
  assert prompt_workers.pool(1, tokenizer) is first
  process = first._workers[0].process  # pylint: disable=protected-access
  monkeypatch.setenv("BIGBENCH_DIR", "/elsewhere")  # where the workers read their data
  second = prompt_workers.pool(1, tokenizer)
  assert second is not first
  assert process.wait(timeout=10) == 0  # the stale worker was stopped


@pytest.mark.parametrize("value,expected", [("0", 0), ("3", 3), (" 2 ", 2)])
def test_number_of_workers_from_the_environment(monkeypatch, value, expected):
  monkeypatch.setenv(prompt_workers.ENV, value)
  assert prompt_workers.num_workers() == expected


def test_auto_is_a_worker_per_core_but_one_and_none_on_two(monkeypatch):
  monkeypatch.setenv(prompt_workers.ENV, "auto")
  for cores, workers in ((1, 0), (2, 0), (4, 3)):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
    assert prompt_workers.num_workers() == workers
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
  assert prompt_workers.num_workers() == prompt_workers.MAX_AUTO_WORKERS


@pytest.mark.parametrize("value", ["many", "-1"])
def test_a_bad_number_of_workers_is_a_clear_error(monkeypatch, value):
  monkeypatch.setenv(prompt_workers.ENV, value)
  with pytest.raises(ValueError, match=r"SYMBOL_TUNING_PROMPT_WORKERS=.*'auto' or a number"):
    prompt_workers.num_workers()
