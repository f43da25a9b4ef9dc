"""Registers the cached twins (data/caching.py) of every prompt mixture: tuning and
instruction (their train split), evaluation (validation), at each length of $SYMBOL_TUNING_CACHE_LENGTHS (settings.cache_lengths).

For seqio's cache_tasks_main: `--module_import=symbol_tuning.data.cached_tasks`, e.g.
  --tasks='symbol_tuning\\.bigbench\\.[^.]*_i512_t32'  (the 18 BIG-bench tuning tasks)
Only names are registered here; no data is read until a task is cached or read.

A dataset that cannot be read stops cache_tasks_main with one line naming it and what to do
(sys.excepthook below), before Beam starts: the source lists its shards (reading the
dataset) while the pipeline is built. A task split none of whose prompts fits its lengths
stops it inside Beam, also with one line; seqio marks a task cached (COMPLETED) only after
all of its files are written, so a failed job leaves nothing that reads as a cache.
"""
import re
import sys

from symbol_tuning import settings
from symbol_tuning.data import caching, tasks
from symbol_tuning.data.sources.examples import DataSourceError


def register_all() -> list[str]:
  """The cached twins of every prompt mixture at every configured length (names): tuning
  and instruction mixtures with the split they train on, evaluation ones with theirs."""
  evaluation = [f"{tasks.PREFIX}_{family}_{setting}" for _, _, family in tasks.EVAL_FAMILIES
                for setting in tasks.prompts.EVAL_SETTINGS]
  return [caching.register_cached(name, lengths, splits=splits)
          for lengths in settings.cache_lengths()
          for names, splits in ((list(tasks.MIXTURES), ("train",)), (evaluation, None))
          for name in names]


def _one_line_data_errors(kind, value, traceback) -> None:
  """A dataset that cannot be read (before Beam starts) or a task split none of whose
  prompts fits (inside a Beam worker, where it arrives wrapped in TensorFlow's and Beam's
  errors): one line; anything else as Python prints it."""
  if isinstance(value, DataSourceError):
    print(f"cache_tasks_main: {value}; fix or replace that copy and run cache_tasks_main "
          "again (nothing was written)", file=sys.stderr)
    return
  found = re.search(r"NoPromptFitsError: (.*)", str(value))
  if found:
    print(f"cache_tasks_main: {found.group(1)}, or leave the task out (--excluded_tasks); "
          "no task of the job was marked cached", file=sys.stderr)
    return
  _previous_hook(kind, value, traceback)


NAMES = register_all()
_previous_hook = sys.excepthook
sys.excepthook = _one_line_data_errors
