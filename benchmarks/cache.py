"""Caching the BIG-bench mixture with seqio's cache_tasks_main (Beam DirectRunner), and
reading it back.

Figures (one run): the DirectRunner's wall time, the cache's size on disk and per 1,000
cached prompts, and packed prompts per second through the trainer's data path
(training.data.host_batches: seqio mixture -> best-fit packing -> batches) read from the
cache against the uncached pipeline (prompts built on the fly), alternated `--repeats`
times in this process. Needs apache-beam (pip install -e '.[beam]').

  python benchmarks/cache.py [--lengths 2048:512] [--num 20000] [--per-label N]
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import common

MIXTURE = "symbol_tuning_bigbench"


def run_beam(out: pathlib.Path, lengths: str, env: dict) -> float:
  inputs, targets = lengths.split(":")
  cmd = [sys.executable, "-m", "seqio.scripts.cache_tasks_main",
         "--module_import=symbol_tuning.data.cached_tasks",
         rf"--tasks=symbol_tuning\.bigbench\.[^.]*_i{inputs}_t{targets}",
         f"--output_cache_dir={out}", "--min_shards=1",
         "--pipeline_options=--runner=DirectRunner"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=dict(env, SYMBOL_TUNING_CACHE_LENGTHS=lengths),
                        capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if proc.returncode:
    sys.exit(f"cache_tasks_main failed:\n{proc.stderr[-3000:]}")
  return seconds


def prompts_per_s(name: str, lengths: dict, use_cached: bool, num: int) -> float:
  """Packed prompts per second through host_batches (after a 1,000-prompt warm-up)."""
  import gc  # pylint: disable=g-import-not-at-top

  from symbol_tuning.training import data  # pylint: disable=g-import-not-at-top

  cfg = data.DataConfig(name, lengths, 32, use_cached=use_cached)
  batches = data.host_batches(cfg)
  count = lambda batch: int(batch["encoder_segment_ids"].max(axis=1).sum())
  warm = 0
  while warm < 1000:
    warm += count(next(batches))
  gc.collect()
  done, start = 0, time.perf_counter()
  while done < num:
    done += count(next(batches))
  return done / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", default="2048:512", help="INPUTS:TARGETS")
  parser.add_argument("--num", type=int, default=20000, help="prompts timed per read")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--per-label", type=int, default=0,
                      help="cut each task to this many examples per label (0: all)")
  args = parser.parse_args()
  if args.num < 1 or args.repeats < 1 or args.per_label < 0:
    parser.error("--num and --repeats must be >= 1, --per-label >= 0")
  common.setup_bigbench()
  from symbol_tuning.data.sources import bigbench  # pylint: disable=g-import-not-at-top

  work = pathlib.Path(tempfile.mkdtemp(prefix="cache_bench_"))
  try:
    if args.per_label:
      os.environ["BIGBENCH_DIR"] = str(bigbench.write_cut_copy(work / "bigbench",
                                                               args.per_label))
    env = dict(os.environ)
    out = work / "cache"
    beam_seconds = run_beam(out, args.lengths, env)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    cached = sum(json.loads(p.read_text())["examples"] for p in out.rglob("stats.*.json"))
    print(f"cache_tasks_main, DirectRunner: {beam_seconds:.1f} s, {cached:,} prompts, "
          f"{size / 1e6:.1f} MB ({size / cached * 1000 / 1e6:.2f} MB per 1,000 prompts)")

    import seqio  # pylint: disable=g-import-not-at-top

    import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
    from symbol_tuning.data import caching  # pylint: disable=g-import-not-at-top

    inputs, targets = (int(x) for x in args.lengths.split(":"))
    lengths = {"inputs": inputs, "targets": targets}
    seqio.add_global_cache_dirs([str(out)])
    twin = caching.register_cached(MIXTURE, lengths)
    rates = {"cached": [], "uncached": []}
    for _ in range(args.repeats):
      rates["cached"].append(prompts_per_s(twin, lengths, True, args.num))
      rates["uncached"].append(prompts_per_s(MIXTURE, lengths, False, args.num))
      print(f"packed prompts/s: cached {rates['cached'][-1]:,.0f}, "
            f"uncached {rates['uncached'][-1]:,.0f}")
    ratios = sorted(c / u for c, u in zip(rates["cached"], rates["uncached"]))
    ratio = ratios[len(ratios) // 2]
    print(f"cached / uncached: {ratio:.1f}x (median of {args.repeats} pairs)")
    common.write("cache", {
        "mixture": MIXTURE, "lengths": lengths, "per_label": args.per_label or None,
        "beam_direct_runner_seconds": beam_seconds, "cached_prompts": cached,
        "cache_bytes": size, "megabytes_per_1000_prompts": size / cached * 1000 / 1e6,
        "prompts_timed": args.num, "cached_prompts_per_s": rates["cached"],
        "uncached_prompts_per_s": rates["uncached"], "cached_over_uncached": ratio,
        "prompt_workers": os.environ.get("SYMBOL_TUNING_PROMPT_WORKERS", "auto"),
        "load_average": os.getloadavg()})
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
