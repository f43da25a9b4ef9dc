"""Training-step throughput and model FLOPs utilisation (MFU) on this machine.

Run: python benchmarks/train_step.py [--family t5|decoder] [--steps 5] [--configs ...]
For a model family's configs (T5: tiny and small; decoder: llama-tiny and llama-100m,
~112M parameters), times the embedded trainer's jitted step (forward, backward, Adafactor
update) on full packed rows (four examples each), and compares the model's FLOPs per
second with the float32 matmul peak measured in the same run. Prints and writes
benchmarks/results/train_step.json (T5) or <family>_train_step.json.

Model FLOPs are counted analytically by the family (ModelFamily.train_flops: matmuls only,
backward = 2x forward), the usual MFU convention; the XLA cost-analysis count of the
compiled step is reported beside it.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)
import jax
import numpy as np

from symbol_tuning.models import registry

# family -> (config, batch, lengths): rows as the family's packed pipeline makes them.
CASES = {
    "t5": (("tiny", 16, {"inputs": 1024, "targets": 32}),
           ("small", 4, {"inputs": 512, "targets": 128})),
    "decoder": (("llama-tiny", 16, {"targets": 1024}), ("llama-100m", 2, {"targets": 512})),
}


def packed_batch(family, cfg, batch: int, lengths: dict) -> dict:
  """Random rows of the family's model features, each packed with four examples:
  encoder_* features are lengths['inputs'] long, decoder_* ones lengths['targets']."""
  rng = np.random.default_rng(0)
  out = {}
  for name in sorted(family.model_features, key=lambda n: n != "decoder_target_tokens"):
    length = lengths["inputs" if name.startswith("encoder_") else "targets"]
    segments, positions = common.four_segments(batch, length)
    if name == "decoder_input_tokens":
      out[name] = np.roll(out["decoder_target_tokens"], 1, axis=1)
    elif name.endswith("_tokens"):
      out[name] = rng.integers(2, cfg.vocab_size, (batch, length), dtype=np.int32)
    elif name.endswith("_loss_weights"):
      out[name] = np.ones((batch, length), np.int32)
    elif name.endswith("_segment_ids"):
      out[name] = segments
    elif name.endswith("_positions"):
      out[name] = positions
    else:  # e.g. decoder_causal_attention: off (a causal LM)
      out[name] = np.zeros((batch, length), np.int32)
  return out


def time_step(family, name, batch, lengths, steps):
  mcfg = family.get_config(name, dropout_rate=0.0)
  seconds, xla_flops, params = common.time_train_step(
      family, family.module(mcfg), lambda: family.init_params(mcfg, 0),
      packed_batch(family, mcfg, batch, lengths), steps)
  return {"config": name, "batch": batch, "lengths": lengths,
          "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
          "seconds_per_step": seconds, "tokens_per_s": batch * sum(lengths.values()) / seconds,
          "model_flops_per_step": family.train_flops(mcfg, batch, lengths),
          "xla_flops_per_step": xla_flops}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_family_flag(parser)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--configs", default=None, help="comma-separated (default: the cases)")
  args = parser.parse_args()
  family = registry.get_family(args.family)
  cases = CASES[family.name]
  if args.configs:
    cases = [c for c in cases if c[0] in args.configs.split(",")]
  peak = common.print_matmul_peak()
  rows = []
  for name, batch, lengths in cases:
    row = common.add_mfu(time_step(family, name, batch, lengths, args.steps), peak)
    rows.append(row)
    print(f"{name:10s} ({row['num_params'] / 1e6:.0f}M) batch {batch} x "
          f"{'/'.join(map(str, lengths.values()))}: {row['seconds_per_step']:.3f} s/step, "
          f"{row['tokens_per_s']:,.0f} tokens/s, {row['model_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"= {row['mfu']:.0%} of the measured matmul peak")
  common.write(common.result_name("train_step", family.name),
               {"family": family.name, "matmul_peak_flops_per_s": peak, "cases": rows})


if __name__ == "__main__":
  main()
