"""Our trainer against the real t5x.train on the same config: loss curves and step time.

Run: python benchmarks/trainer_vs_t5x.py [--quick]   (needs t5x: bash .ci/install_t5x.sh)
Both trainers start from one random checkpoint (written as HF, converted to t5x at step 0),
read the same seqio batches (symbol_tuning_bigbench, seed 0, best-fit packing), dropout 0,
one after the other in this process's machine (tests/t5x_support.compare_trainers).
1. Loss curves: the tiny config, float32, 10 steps: per-step loss per target token of
   each, their largest relative difference, and the largest parameter difference after
   the last step.
2. Step time: Flan-T5 small's shape, batch 8 at 512/16 tokens and batch 3 at 2048/32 (CASES:
   batch 8 does not fit in memory there; --quick: 512/16 only, one round), float32 and
   bfloat16 activations: median seconds per step after each run's first, over ROUNDS runs of
   each trainer taken alternately, ours and t5x's, the ratio (t5x / ours: above 1 means ours
   is faster), each trainer's peak resident memory (max RSS of its process), and the load
   average before and after the case.
Prints and writes benchmarks/results/trainer_vs_t5x.json.
"""
import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

import common

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import t5x_support  # noqa: E402  pylint: disable=wrong-import-position


def _bigbench_dir() -> pathlib.Path:
  common.setup_bigbench()
  return pathlib.Path(os.environ["BIGBENCH_DIR"])


def loss_curves(steps: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    r = t5x_support.compare_trainers(tmp, _bigbench_dir(), steps=steps)
  rel = [abs(a - b) / abs(b) for a, b in zip(r["ours_loss"], r["t5x_loss"])]
  print(f"loss per target token, tiny, float32, {steps} steps (same checkpoint and batches)")
  print(f"{'step':>5} {'ours':>10} {'t5x':>10} {'rel. diff':>10}")
  for s, a, b, d in zip(r["steps"], r["ours_loss"], r["t5x_loss"], rel):
    print(f"{s:>5} {a:>10.5f} {b:>10.5f} {d:>10.1e}")
  print(f"largest relative loss difference {max(rel):.1e}; largest parameter difference "
        f"after step {steps}: {r['max_abs_param_diff']:.1e} (largest change from the start: "
        f"{r['max_abs_param_change']:.1e})")
  return {"steps": r["steps"], "ours_loss": r["ours_loss"], "t5x_loss": r["t5x_loss"],
          "max_rel_loss_diff": max(rel), "max_abs_param_diff": r["max_abs_param_diff"],
          "max_abs_param_change": r["max_abs_param_change"]}


# (input length, target length, batch). 2048/32 runs at batch 3: at batch 8 neither trainer
# fits this 24 GiB machine in float32 (XLA's temp buffer for the step: t5x 29.3 GB, ours
# 26.7 GB, mostly the encoder's (8, 6, 2048, 2048) float32 attention tensors, 24 of 805 MB
# live at once in both); batch 4 needs 15.0 / 13.5 GB (t5x / ours) on top of ~3 GB of
# process, more than the half of the machine a benchmark may take beside other jobs.
CASES = ((512, 16, 8), (2048, 32, 3))


def _load() -> list:
  return [round(x, 2) for x in os.getloadavg()]


def step_time(lengths, batch: int, dtype: str, steps: int, rounds: int) -> dict:
  """`rounds` runs of each trainer, alternating (t5x, ours, t5x, ours, ...) so a change in
  the machine's load hits both; the median over all rounds of each run's steps after its
  first (ours compiles in it; t5x compiles before step 1 but also starts its input there)."""
  ours_steps, t5x_steps, runs, load = [], [], [], {"before": _load()}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
      r = t5x_support.compare_trainers(
          pathlib.Path(tmp) / f"round_{i}", _bigbench_dir(), steps=steps, size="small",
          lengths=lengths, batch_size=batch, activation_dtype=dtype, init_dir=tmp)
      ours_steps += r["ours_seconds_per_step"][1:]
      t5x_steps += r["t5x_seconds_per_step"][1:]
      runs.append(r)
      shutil.rmtree(pathlib.Path(tmp) / f"round_{i}")
  load["after"] = _load()
  ours, theirs = statistics.median(ours_steps), statistics.median(t5x_steps)
  gib = lambda key: max(r[key] for r in runs) / 2**30
  row = {"config": "small", "batch": batch, "input_length": lengths[0],
         "target_length": lengths[1], "activation_dtype": dtype, "rounds": rounds,
         "steps_per_run": steps, "ours_step_seconds": ours_steps,
         "t5x_step_seconds": t5x_steps, "ours_seconds_per_step": ours,
         "t5x_seconds_per_step": theirs, "t5x_over_ours": theirs / ours,
         "ours_peak_rss_gib": gib("ours_max_rss_bytes"),
         "t5x_peak_rss_gib": gib("t5x_max_rss_bytes"), "load_average_1_5_15": load,
         "max_rel_loss_diff": max(abs(a - b) / abs(b) for r in runs
                                  for a, b in zip(r["ours_loss"], r["t5x_loss"]))}
  print(f"small, batch {batch}, {lengths[0]}/{lengths[1]}, {dtype}: ours {ours:.2f} s/step "
        f"(peak {row['ours_peak_rss_gib']:.1f} GiB), t5x {theirs:.2f} s/step (peak "
        f"{row['t5x_peak_rss_gib']:.1f} GiB), t5x/ours {theirs / ours:.2f} (medians of "
        f"{len(ours_steps)} steps each, {rounds} alternating rounds; fastest steps "
        f"{min(ours_steps):.2f} / {min(t5x_steps):.2f}; load {load}); largest "
        f"relative loss difference {row['max_rel_loss_diff']:.1e}", flush=True)
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="512/16 only, fewer steps")
  parser.add_argument("--curve_steps", type=int, default=10)
  parser.add_argument("--timing_steps", type=int, default=3, help="steps per timed run")
  parser.add_argument("--rounds", type=int, default=2,
                      help="runs of each trainer per case, alternating")
  args = parser.parse_args()
  reason = t5x_support.t5x_missing()
  if reason:
    sys.exit(f"trainer_vs_t5x: {reason}")
  figures = {"loss_curves": loss_curves(args.curve_steps), "step_time": []}
  common.write("trainer_vs_t5x", figures)  # rewritten after each case: a late failure keeps these
  for input_length, target_length, batch in CASES[:1] if args.quick else CASES:
    for dtype in ("float32", "bfloat16"):
      try:
        figures["step_time"].append(step_time((input_length, target_length), batch, dtype,
                                              args.timing_steps, 1 if args.quick else args.rounds))
      except AssertionError as e:  # a trainer failed (e.g. out of memory): say which, go on
        reason = next((line for line in reversed(str(e).splitlines()) if "Error" in line),
                      str(e).splitlines()[0])
        print(f"small, batch {batch}, {input_length}/{target_length}, {dtype}: failed: {reason}")
        figures["step_time"].append({"config": "small", "batch": batch,
                                     "input_length": input_length,
                                     "target_length": target_length,
                                     "activation_dtype": dtype, "error": reason})
      common.write("trainer_vs_t5x", figures)


if __name__ == "__main__":
  main()
