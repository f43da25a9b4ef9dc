"""Caching the BIG-bench mixture with seqio's cache_tasks_main (Beam DirectRunner), and
reading it back.

Figures (one run): the DirectRunner's wall time, the cache's size on disk and per 1,000
cached prompts, and packed prompts per second through the trainer's data path
(training.data.host_batches: seqio mixture -> best-fit packing and T5's conversion ->
batches) read from the cache against the uncached pipeline (prompts built on the fly),
alternated `--repeats` times in this process, each with the 1-minute load average; and
the cached mixture's own rate before packing (read, parse, mixing: the stage packing
reads from, to show where the time goes). Needs apache-beam (pip install -e '.[beam]').

  python benchmarks/cache.py [--lengths 2048:512] [--num 20000] [--repeats 2] [--per-label N]
    [--work-dir D]

With --work-dir, the cut BIG-bench copy and the cache are kept in D, and a later run with
the same D, --lengths and --per-label reads them back instead of running Beam again (its
JSON then carries the build's figures from the run that made them, from D/build.json).
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


def cache_build(work: pathlib.Path, args) -> dict:
  """Builds the cache in work/cache (BIGBENCH_DIR set to a cut copy in work/bigbench with
  --per-label), or reuses the one work/build.json describes if it matches; the build's
  figures, with "reused"."""
  from symbol_tuning.data.sources import bigbench  # pylint: disable=g-import-not-at-top

  record = work / "build.json"
  wanted = {"lengths": args.lengths, "per_label": args.per_label}
  if record.is_file():
    build = json.loads(record.read_text())
    if {k: build.get(k) for k in wanted} == wanted:
      if args.per_label:
        os.environ["BIGBENCH_DIR"] = str(work / "bigbench")
      return {**{k: v for k, v in build.items() if k not in wanted}, "reused": True}
    print(f"{work} holds a cache built with {build.get('lengths')} and --per-label "
          f"{build.get('per_label')}: building it again")
  for stale in ("bigbench", "cache"):
    shutil.rmtree(work / stale, ignore_errors=True)
  work.mkdir(parents=True, exist_ok=True)
  if args.per_label:
    os.environ["BIGBENCH_DIR"] = str(bigbench.write_cut_copy(work / "bigbench",
                                                             args.per_label))
  out = work / "cache"
  beam_seconds = run_beam(out, args.lengths, dict(os.environ))
  size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  cached = sum(json.loads(p.read_text())["examples"] for p in out.rglob("stats.*.json"))
  build = {"beam_direct_runner_seconds": beam_seconds, "cached_prompts": cached,
           "cache_bytes": size, "megabytes_per_1000_prompts": size / cached * 1000 / 1e6,
           "load_average_after_build": os.getloadavg()}
  record.write_text(json.dumps({**wanted, **build}, indent=1))
  return {**build, "reused": False}


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


def mixed_examples_per_s(name: str, lengths: dict, num: int) -> float:
  """Examples per second of the cached mixture itself (cache read, parse, mixing: what
  packing and batching get), in buffers of 256 as packing reads them."""
  import seqio  # pylint: disable=g-import-not-at-top

  ds = seqio.get_mixture_or_task(name).get_dataset(
      lengths, split="train", shuffle=True, seed=0, num_epochs=None, use_cached=True)
  buffers = iter(ds.batch(256).prefetch(2))
  count = lambda batch: int(batch["inputs"].nrows())
  warm = 0
  while warm < 1000:
    warm += count(next(buffers))
  done, start = 0, time.perf_counter()
  while done < num:
    done += count(next(buffers))
  return done / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", default="2048:512", help="INPUTS:TARGETS")
  parser.add_argument("--num", type=int, default=20000, help="prompts timed per read")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--per-label", type=int, default=0,
                      help="cut each task to this many examples per label (0: all)")
  parser.add_argument("--work-dir", type=pathlib.Path, default=None,
                      help="keep the cache here and reuse it when it was built with the "
                           "same --lengths and --per-label (default: a temporary folder)")
  args = parser.parse_args()
  if args.num < 1 or args.repeats < 1 or args.per_label < 0:
    parser.error("--num and --repeats must be >= 1, --per-label >= 0")
  common.setup_bigbench()
  work = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="cache_bench_"))
  try:
    build = cache_build(work, args)
    out = work / "cache"
    print(f"cache_tasks_main, DirectRunner: {build['beam_direct_runner_seconds']:.1f} s, "
          f"{build['cached_prompts']:,} prompts, {build['cache_bytes'] / 1e6:.1f} MB "
          f"({build['megabytes_per_1000_prompts']:.2f} MB per 1,000 prompts)"
          + (" [reused]" if build["reused"] else ""))

    import seqio  # pylint: disable=g-import-not-at-top

    import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
    from symbol_tuning.data import caching  # pylint: disable=g-import-not-at-top

    inputs, targets = (int(x) for x in args.lengths.split(":"))
    lengths = {"inputs": inputs, "targets": targets}
    seqio.add_global_cache_dirs([str(out)])
    twin = caching.register_cached(MIXTURE, lengths)
    rates = {"cached": [], "uncached": [], "cached_before_packing": [], "load_average": []}
    for _ in range(args.repeats):
      rates["cached_before_packing"].append(mixed_examples_per_s(twin, lengths, args.num))
      rates["cached"].append(prompts_per_s(twin, lengths, True, args.num))
      rates["uncached"].append(prompts_per_s(MIXTURE, lengths, False, args.num))
      rates["load_average"].append(os.getloadavg()[0])
      print(f"packed prompts/s: cached {rates['cached'][-1]:,.0f}, "
            f"uncached {rates['uncached'][-1]:,.0f} (the cached mixture before packing: "
            f"{rates['cached_before_packing'][-1]:,.0f} examples/s; load average "
            f"{rates['load_average'][-1]:.1f} on {os.cpu_count()} cores)")
    ratios = sorted(c / u for c, u in zip(rates["cached"], rates["uncached"]))
    ratio = ratios[len(ratios) // 2]
    print(f"cached / uncached: {ratio:.1f}x (median of {args.repeats} pairs)")
    common.write("cache", {
        "mixture": MIXTURE, "lengths": lengths, "per_label": args.per_label or None,
        **build,
        "prompts_timed": args.num, "cached_prompts_per_s": rates["cached"],
        "uncached_prompts_per_s": rates["uncached"], "cached_over_uncached": ratio,
        "cached_examples_per_s_before_packing": rates["cached_before_packing"],
        "load_average_1min_per_repeat": rates["load_average"],
        "prompt_workers": os.environ.get("SYMBOL_TUNING_PROMPT_WORKERS", "auto"),
        "load_average": os.getloadavg()})
  finally:
    if args.work_dir is None:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
