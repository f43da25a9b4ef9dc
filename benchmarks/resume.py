"""Resume cost of the training data stream: restoring its checkpointed position vs skipping.

Run: python benchmarks/resume.py [--step 2000] [--batch 8]
One process runs the stream to --step (batches of --batch packed rows of
symbol_tuning_bigbench at 2048/32) and saves its position at step 0 and at --step, as the
trainer does in each checkpoint. Then fresh processes (a restart) time, from the first line
of data code to the first batch in hand:
  - resume at step 0 and at --step from the saved position (HostBatches.restore);
  - resume at --step by rebuilding the stream and skipping --step batches (what every
    restart did before the position was saved, and what a checkpoint without it still does).
Each resumed first batch is checked against the uninterrupted run's. Prints and writes
benchmarks/results/resume.json.
"""
import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import common  # pylint: disable=unused-import  (sets the environment first)


def config(batch: int):
  from symbol_tuning.training import data  # pylint: disable=g-import-not-at-top

  return data.DataConfig("symbol_tuning_bigbench", {"inputs": 2048, "targets": 32}, batch)


def digest(batch: dict) -> str:
  h = hashlib.sha256()
  for key in sorted(batch):
    h.update(key.encode() + batch[key].tobytes())
  return h.hexdigest()[:16]


def produce(step: int, batch: int, out: pathlib.Path) -> dict:
  """Runs the stream to `step`, saving its position at 0 and at `step`."""
  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from symbol_tuning.training import data  # pylint: disable=g-import-not-at-top

  batches = data.HostBatches(config(batch))
  start = time.perf_counter()
  batches.save(out / "step_0")
  save_0 = time.perf_counter() - start
  first = digest(next(batches))
  start = time.perf_counter()
  for _ in range(step - 1):
    next(batches)
  run = time.perf_counter() - start
  start = time.perf_counter()
  batches.save(out / f"step_{step}")
  save_s = time.perf_counter() - start
  size = sum(p.stat().st_size for p in (out / f"step_{step}").iterdir())
  return {"first_batch": {0: first, step: digest(next(batches))},
          "seconds_to_run_to_step": run, "save_seconds": {"0": save_0, str(step): save_s},
          "saved_bytes": size}


def resume(step: int, batch: int, out: pathlib.Path, mode: str) -> dict:
  """In a fresh process: the data stream at `step`, by restoring or by skipping."""
  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from symbol_tuning.training import data  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  if mode == "restore":
    batches = data.HostBatches(config(batch))
    built = time.perf_counter()
    if not batches.restore(out / f"step_{step}", step):
      raise RuntimeError(f"no saved position for step {step} in {out}")
  else:
    batches = data.HostBatches(config(batch), start_step=step)
    built = time.perf_counter()
  restored = time.perf_counter()
  first = digest(next(batches))
  end = time.perf_counter()
  return {"seconds": end - start, "first_batch": first, "build_pipeline_s": built - start,
          "restore_s": restored - built, "first_batch_s": end - restored}


def child(args) -> None:
  common.setup_bigbench()
  out = pathlib.Path(args.dir)
  if args.child == "produce":
    result = produce(args.step, args.batch, out)
  else:
    result = resume(args.step, args.batch, out, args.child)
  print(json.dumps(result))


def run_child(mode: str, step: int, batch: int, out: pathlib.Path) -> dict:
  cmd = [sys.executable, __file__, "--child", mode, "--step", str(step), "--batch", str(batch),
         "--dir", str(out)]
  done = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--step", type=int, default=2000)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--child", choices=("produce", "restore", "skip"), help=argparse.SUPPRESS)
  parser.add_argument("--dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp)
    made = run_child("produce", args.step, args.batch, out)
    print(f"ran the stream to step {args.step} in {made['seconds_to_run_to_step']:.1f} s; "
          f"position saved in {made['save_seconds'][str(args.step)]:.1f} s, "
          f"{made['saved_bytes'] / 1e6:.1f} MB")
    resumed = {}
    for mode, step in (("restore", 0), ("restore", args.step), ("skip", args.step)):
      r = run_child(mode, step, args.batch, out)
      r["identical"] = r["first_batch"] == made["first_batch"][str(step)]
      resumed[f"{mode}_{step}"] = r
      print(f"resume at step {step:5d} by {mode:7s}: {r['seconds']:6.1f} s to the first "
            f"batch = {r['build_pipeline_s']:.1f} s building the pipeline (as a fresh start "
            f"does) + {r['restore_s']:.1f} s restoring + {r['first_batch_s']:.1f} s to the "
            f"first batch; same batch as the uninterrupted run: {r['identical']}")
  common.write("resume", {
      "mixture": "symbol_tuning_bigbench", "task_feature_lengths": {"inputs": 2048,
                                                                   "targets": 32},
      "batch_size": args.batch, "step": args.step, "vocabulary": "local",
      "seconds_to_run_to_step": round(made["seconds_to_run_to_step"], 2),
      "save_seconds": round(made["save_seconds"][str(args.step)], 2),
      "saved_megabytes": round(made["saved_bytes"] / 1e6, 1),
      "resume_seconds": {k: round(v["seconds"], 2) for k, v in resumed.items()},
      "resume_breakdown_seconds": {
          k: {p: round(v[f"{p}_s"], 2) for p in ("build_pipeline", "restore", "first_batch")}
          for k, v in resumed.items()},
      "identical_first_batch": all(v["identical"] for v in resumed.values())})


if __name__ == "__main__":
  main()
