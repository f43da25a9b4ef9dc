"""Prompt worker processes: prompts are built beside tf.data, past Python's GIL.

Building a prompt is Python (~150 us). In one process tf.data's threads take turns on the
GIL, so one core builds every prompt however many the host has. With
`SYMBOL_TUNING_PROMPT_WORKERS=N` (default `auto`: one per core but one, at most 8; none on
one or two cores) the seqio preprocessor hands each batch of queries to one of N worker
processes instead (`python -m symbol_tuning.data.prompt_workers`: no TensorFlow or seqio in
them; a worker starts and exits in ~0.4 s). Prompts are pure functions of (task, split,
position, seed), so the stream is the same example for example as in-process building;
`0` builds in-process.

Workers read the data themselves, with the environment the pool was started in: a pool
is keyed by the tokenizer, the environment and the data source selection
(sources.selection()), and a change of any starts a new one. Splits a worker cannot read
without TensorFlow (TFDS's, with --source tfds) are read here and handed to each worker
once, before its first request that needs them (("handed", splits), no reply).
Protocol: pickles over the worker's stdin/stdout; the worker's own prints go to stderr.
"""
import atexit
import os
import pickle
import queue
import subprocess
import sys
import threading

from symbol_tuning import settings
from symbol_tuning.data import prompt_builder, sources, tokens

ENV = settings.PROMPT_WORKERS_VARIABLE
MAX_AUTO_WORKERS = 8


class PromptWorkerError(RuntimeError):
  """A worker process died (killed, out of memory) or could not start."""


def num_workers() -> int:
  """How many worker processes $SYMBOL_TUNING_PROMPT_WORKERS asks for (auto | N >= 0)."""
  value = settings.prompt_workers()
  if value == "auto":
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # On 2 cores the training step needs the cores that workers would take (the input
    # pipeline alone measured 54-74% faster with 2 workers there: benchmarks/prompts.py).
    return 0 if (cores or 1) <= 2 else min(cores - 1, MAX_AUTO_WORKERS)
  try:
    n = int(value)
  except ValueError:
    n = -1
  if n < 0:
    raise ValueError(f"${ENV}={value!r}: expected 'auto' or a number of processes >= 0")
  return n


class _Worker:
  """One worker process and its pipes."""

  def __init__(self, tokenizer: tokens.Tokenizer):
    self.process = subprocess.Popen(
        [sys.executable, "-m", "symbol_tuning.data.prompt_workers"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    self._send(tokenizer)
    self.handed: set = set()  # (entry, split) keys sent to this worker

  def _send(self, message) -> None:
    pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    self.process.stdin.flush()

  def call(self, request, handed: dict | None = None):
    """The reply to `request`, after sending the `handed` splits this worker lacks."""
    try:
      new = {key: loaded for key, loaded in (handed or {}).items() if key not in self.handed}
      if new:
        self._send(("handed", new))  # a request starts with its PromptSpec
        self.handed.update(new)
      self._send(request)
      status, value = pickle.load(self.process.stdout)
    except (EOFError, OSError, pickle.UnpicklingError) as e:
      code = self.process.poll()
      raise PromptWorkerError(
          f"prompt worker process {self.process.pid} exited (code {code}) while building "
          f"prompts of {request[0].task_name}; its stderr says why (set ${ENV}=0 to build "
          "prompts in this process)") from e
    if status == "error":
      raise value
    return value

  def close(self) -> None:
    try:
      self.process.stdin.close()  # the worker exits at end of input
      self.process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
      self.process.kill()


class Pool:
  """N workers; a call takes an idle one (tf.data calls from several threads at once)."""

  def __init__(self, n: int, tokenizer: tokens.Tokenizer):
    self._tokenizer = tokenizer
    self._workers = [_Worker(tokenizer) for _ in range(n)]
    self._idle: queue.Queue = queue.Queue()
    for worker in self._workers:
      self._idle.put(worker)

  def build_batch(self, spec: prompt_builder.PromptSpec, split: str, budget: int,
                  positions, seeds, model_length=None, eos=None) -> tuple:
    """prompt_builder.build_batch for PromptBuilder(spec, split, budget), in a worker."""
    worker = self._idle.get()
    splits = (spec.entry.train_split, spec.dataset_split(split))  # exemplars, queries
    handed = sources.for_workers(spec.entry, splits)
    try:
      return worker.call((spec, split, budget, positions, seeds, model_length, eos), handed)
    except PromptWorkerError:
      worker.close()
      fresh = _Worker(self._tokenizer)  # later calls get a fresh process
      self._workers[self._workers.index(worker)] = worker = fresh
      raise
    finally:
      self._idle.put(worker)

  def pids(self) -> list[int]:
    return [worker.process.pid for worker in self._workers]

  def close(self) -> None:
    for worker in self._workers:
      worker.close()


_pools: dict[tuple, Pool] = {}
_pools_lock = threading.Lock()


def pool(n: int, tokenizer: tokens.Tokenizer) -> Pool:
  """The pool of `n` workers for this tokenizer, environment and data source selection
  (started on first use)."""
  key = (n, tokenizer.digest, settings.environment_fingerprint(), sources.selection())
  found = _pools.get(key)
  if found is not None:
    return found
  with _pools_lock:
    if key not in _pools:
      close_all()  # another tokenizer or environment: the old workers would build stale data
      _pools[key] = Pool(n, tokenizer)
    return _pools[key]


def worker_pids() -> list[int]:
  """The process ids of the live workers (benchmarks/prompts.py reads their CPU time)."""
  return [pid for p in _pools.values() for pid in p.pids()]


def close_all() -> None:
  """Stops every worker (at exit, and when the data or the vocabulary changes)."""
  for p in list(_pools.values()):
    p.close()
  _pools.clear()


atexit.register(close_all)


def _serve() -> None:
  """The worker's loop: one tokenizer, then build_batch requests until end of input."""
  protocol_out = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # anything printed, by Python or a library, goes to stderr
  sys.stdout = sys.stderr
  stdin = sys.stdin.buffer
  try:
    tokenizer = pickle.load(stdin)
  except EOFError:  # the pool closed before sending anything
    return
  builders: dict[tuple, prompt_builder.PromptBuilder] = {}
  while True:
    try:
      message = pickle.load(stdin)
    except EOFError:
      return
    if message[0] == "handed":  # loaded splits for sources.receive (no reply)
      sources.receive(message[1])
      continue
    spec, split, budget, positions, seeds, model_length, eos = message
    try:
      key = (spec, split, budget)
      if key not in builders:
        builders[key] = prompt_builder.PromptBuilder(spec, split, budget, tokenizer)
      reply = ("ok", prompt_builder.build_batch(builders[key], positions, seeds,
                                                model_length, eos))
    except Exception as e:  # pylint: disable=broad-except  (re-raised in the caller)
      try:
        pickle.dumps(e)
        reply = ("error", e)
      except Exception:  # pylint: disable=broad-except
        reply = ("error", RuntimeError(f"{type(e).__name__}: {e}"))
    try:
      pickle.dump(reply, protocol_out, protocol=pickle.HIGHEST_PROTOCOL)
      protocol_out.flush()
    except BrokenPipeError:  # the main process is gone (ended or killed): nothing to say
      os._exit(0)  # pylint: disable=protected-access  (no flush of the broken pipe at exit)


if __name__ == "__main__":
  _serve()
