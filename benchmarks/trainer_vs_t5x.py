"""Our trainer against the real t5x.train on the same config: loss curves and step time.

Run: python benchmarks/trainer_vs_t5x.py [--quick]   (needs t5x: bash .ci/install_t5x.sh)
Both trainers start from one random checkpoint (written as HF, converted to t5x at step 0),
read the same seqio batches (symbol_tuning_bigbench, seed 0, best-fit packing), dropout 0,
one after the other in this process's machine (tests/t5x_support.compare_trainers).
1. Loss curves: the tiny config, float32, 10 steps: per-step loss per target token of
   each, their largest relative difference, and the largest parameter difference after
   the last step.
2. Step time: Flan-T5 small's shape, batch 8, 512/16 and 2048/32 tokens (--quick: 512/16
   only), float32 and bfloat16 activations: median seconds per step after the first
   (compiling) one, ours and t5x's, and the ratio (t5x / ours: above 1 means ours is faster).
Prints and writes benchmarks/results/trainer_vs_t5x.json.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile

import common

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import t5x_support  # noqa: E402  pylint: disable=wrong-import-position


def _bigbench_dir() -> pathlib.Path:
  common.setup_bigbench()
  import os  # pylint: disable=import-outside-toplevel

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


def step_time(lengths, dtype: str, steps: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    r = t5x_support.compare_trainers(tmp, _bigbench_dir(), steps=steps, size="small",
                                     lengths=lengths, batch_size=8, activation_dtype=dtype)
  ours = statistics.median(r["ours_seconds_per_step"][1:])
  theirs = statistics.median(r["t5x_seconds_per_step"][1:])
  row = {"config": "small", "batch": 8, "input_length": lengths[0],
         "target_length": lengths[1], "activation_dtype": dtype,
         "ours_seconds_per_step": ours, "t5x_seconds_per_step": theirs,
         "t5x_over_ours": theirs / ours,
         "max_rel_loss_diff": max(abs(a - b) / abs(b)
                                  for a, b in zip(r["ours_loss"], r["t5x_loss"]))}
  print(f"small, batch 8, {lengths[0]}/{lengths[1]}, {dtype}: ours {ours:.2f} s/step, "
        f"t5x {theirs:.2f} s/step, t5x/ours {theirs / ours:.2f}; largest relative loss "
        f"difference {row['max_rel_loss_diff']:.1e}", flush=True)
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="512/16 only, fewer steps")
  parser.add_argument("--curve_steps", type=int, default=10)
  parser.add_argument("--timing_steps", type=int, default=4, help="steps per timed run")
  args = parser.parse_args()
  reason = t5x_support.t5x_missing()
  if reason:
    sys.exit(f"trainer_vs_t5x: {reason}")
  figures = {"loss_curves": loss_curves(args.curve_steps), "step_time": []}
  common.write("trainer_vs_t5x", figures)  # rewritten after each case: a late failure keeps these
  for lengths in ((512, 16),) if args.quick else ((512, 16), (2048, 32)):
    for dtype in ("float32", "bfloat16"):
      try:
        figures["step_time"].append(step_time(lengths, dtype, args.timing_steps))
      except AssertionError as e:  # a trainer failed (e.g. out of memory): say which, go on
        reason = next((line for line in reversed(str(e).splitlines()) if "Error" in line),
                      str(e).splitlines()[0])
        print(f"small, batch 8, {lengths[0]}/{lengths[1]}, {dtype}: failed: {reason}")
        figures["step_time"].append({"config": "small", "batch": 8,
                                     "input_length": lengths[0], "target_length": lengths[1],
                                     "activation_dtype": dtype, "error": reason})
      common.write("trainer_vs_t5x", figures)


if __name__ == "__main__":
  main()
