"""`symbol-tuning export` speed beside the seqio pipeline's, measured in one run.

Run: python benchmarks/export.py [--num 20000] [--repeats 3] [--cores 2]
Prints and writes benchmarks/results/export.json:
  - export_prompts_per_s: prompts per second that `symbol-tuning export symbol_tuning_bigbench`
    (2048/512, the command's defaults) writes as JSONL, as a user runs it: the console
    command in a fresh process, --num prompts, its output file watched from here. The
    rate counts from the first write to disk (start-up done: imports, data loading,
    tracing) to the last (the file complete), so start-up's noise, ~18-24 s on a busy
    2-core machine, stays out of it; startup_s is the time to the first write;
  - pipeline_prompts_per_s: the packed seqio pipeline's rate on the same cores with prompts
    built in-process (benchmarks/prompts.py's `pipeline_speed`, timed after 1,000 prompts;
    export also builds in-process on 2 cores or fewer);
  - pipeline_over_export: the pipeline's rate over export's, each pipeline run right after
    an export (this VM's speed drifts), --repeats times, and their median.
Both run in fresh processes pinned to the first --cores cores.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import common
import prompts

POLL_S = 0.01


def export_speed(num: int, cores: int) -> dict:
  """`symbol-tuning export symbol_tuning_bigbench --num num` in a fresh process pinned to
  the first `cores` cores: prompts/s from its first write to disk to its last."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "prompts.jsonl")
    cmd = [sys.executable, "-m", "symbol_tuning.cli", "export", "symbol_tuning_bigbench",
           "--num", str(num), "--out", out]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, set(range(cores))))
    size, first, last, lines_at_first = 0, None, None, 0
    while proc.poll() is None:
      now = time.perf_counter()
      current = os.path.getsize(out) if os.path.exists(out) else 0
      if current != size:
        size, last = current, now
        if first is None:  # the first buffer of lines reached the disk
          first = now
          with open(out, "rb") as f:
            lines_at_first = f.read(current).count(b"\n")
      time.sleep(POLL_S)
    err = proc.stderr.read()
    if proc.returncode:
      raise RuntimeError(f"export failed ({proc.returncode}): {err[-2000:]}")
    with open(out, "rb") as f:
      lines = f.read().count(b"\n")
  if lines != num or first is None or last <= first:
    raise RuntimeError(f"export wrote {lines} of {num} prompts in one write; raise --num")
  return {"prompts_per_s": (lines - lines_at_first) / (last - first),
          "startup_s": first - start, "timed_prompts": lines - lines_at_first}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=20_000, help="prompts per export and pipeline run")
  parser.add_argument("--repeats", type=int, default=3, help="export / pipeline pairs")
  parser.add_argument("--cores", type=int, default=2)
  args = parser.parse_args()
  available = len(os.sched_getaffinity(0))
  if args.num < 1 or args.repeats < 1:
    parser.error(f"--num and --repeats must be at least 1 (got {args.num}, {args.repeats})")
  if not 1 <= args.cores <= available:
    parser.error(f"--cores {args.cores}: this machine has {available} cores to pin to")
  common.setup_bigbench()
  pairs = []
  for _ in range(args.repeats):
    export = export_speed(args.num, args.cores)
    pipeline = prompts.pipeline_speed_on(args.cores, args.num, "0")
    pairs.append({"export_prompts_per_s": export["prompts_per_s"],
                  "export_startup_s": export["startup_s"],
                  "export_timed_prompts": export["timed_prompts"],
                  "pipeline_prompts_per_s": pipeline["prompts_per_s"],
                  "pipeline_over_export": pipeline["prompts_per_s"] / export["prompts_per_s"]})
    print(f"export {export['prompts_per_s']:,.0f} prompts/s ({export['timed_prompts']:,} "
          f"prompts timed after a start-up of {export['startup_s']:.1f} s); pipeline "
          f"{pipeline['prompts_per_s']:,.0f} prompts/s; "
          f"{pairs[-1]['pipeline_over_export']:.2f}x", flush=True)
  middle = sorted(pairs, key=lambda p: p["pipeline_over_export"])[len(pairs) // 2]
  print(f"median: pipeline / export = {middle['pipeline_over_export']:.2f}x "
        f"({middle['pipeline_prompts_per_s']:,.0f} / {middle['export_prompts_per_s']:,.0f} "
        f"prompts/s on {args.cores} cores)")
  common.write("export", {
      "mixture": "symbol_tuning_bigbench", "input_length": 2048, "target_length": 512,
      "vocabulary": "local", "cores": args.cores, "num_prompts": args.num,
      "load_average": os.getloadavg()[0],
      "export_prompts_per_s": round(middle["export_prompts_per_s"], 1),
      "pipeline_prompts_per_s": round(middle["pipeline_prompts_per_s"], 1),
      "pipeline_over_export": round(middle["pipeline_over_export"], 3),
      "pairs": [{k: round(v, 3) for k, v in p.items()} for p in pairs]})


if __name__ == "__main__":
  main()
