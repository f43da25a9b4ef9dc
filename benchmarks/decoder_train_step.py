"""Decoder-only training-step throughput and MFU on this machine.

Run: python benchmarks/decoder_train_step.py [--steps 3]
Times the embedded trainer's jitted step (forward, backward, Adafactor update) for the
decoder-only configs llama-tiny and llama-100m (~112M parameters) on full packed rows,
against the float32 matmul peak measured in the same run (common.matmul_peak).
Model FLOPs are counted analytically (matmuls only, backward = 2x forward); the XLA
cost-analysis count is reported beside it. Prints and writes
benchmarks/results/decoder_train_step.json.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)
import jax
import numpy as np

from symbol_tuning.model import decoder_config, decoder_network

# (config, batch, row length): rows as the decoder-only packer makes them.
CASES = (("llama-tiny", 16, 1024), ("llama-100m", 2, 512))


def model_flops(cfg: decoder_config.DecoderConfig, batch: int, length: int) -> float:
  """Matmul FLOPs of one training step (forward + backward = 3x forward); attention scores
  over the whole row (the packed-segment mask does not skip work)."""
  d, q, kv = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  per_token = cfg.num_layers * (2 * d * (2 * q + 2 * kv) + 2 * 2 * length * q
                                + 2 * 3 * d * cfg.mlp_dim) + 2 * d * cfg.vocab_size
  return 3.0 * batch * length * per_token


def packed_batch(cfg, batch, length):
  rng = np.random.default_rng(0)
  targets = rng.integers(2, cfg.vocab_size, (batch, length), dtype=np.int32)
  seg, pos = common.four_segments(batch, length)
  return {"decoder_target_tokens": targets, "decoder_input_tokens": np.roll(targets, 1, axis=1),
          "decoder_loss_weights": np.ones((batch, length), np.int32),
          "decoder_segment_ids": seg, "decoder_positions": pos,
          "decoder_causal_attention": np.zeros((batch, length), np.int32)}


def time_step(name, batch, length, steps):
  mcfg = decoder_config.get_config(name, dropout_rate=0.0)
  seconds, xla_flops, params = common.time_train_step(
      decoder_network.DecoderOnlyTransformer(mcfg), lambda: decoder_network.init_params(mcfg, 0),
      packed_batch(mcfg, batch, length), steps, decoder_only=True)
  return {"config": name, "batch": batch, "row_length": length,
          "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
          "seconds_per_step": seconds, "tokens_per_s": batch * length / seconds,
          "model_flops_per_step": model_flops(mcfg, batch, length), "xla_flops_per_step": xla_flops}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--configs", default=",".join(c[0] for c in CASES))
  args = parser.parse_args()
  peak = common.print_matmul_peak()
  rows = []
  for name, batch, length in CASES:
    if name not in args.configs.split(","):
      continue
    row = common.add_mfu(time_step(name, batch, length, args.steps), peak)
    rows.append(row)
    print(f"{name:10s} ({row['num_params'] / 1e6:.0f}M) batch {batch} x {length}: "
          f"{row['seconds_per_step']:.3f} s/step, {row['tokens_per_s']:,.0f} tokens/s, "
          f"{row['model_flops_per_s'] / 1e9:.1f} GFLOP/s = {row['mfu']:.0%} of the measured "
          f"matmul peak")
  common.write("decoder_train_step", {"matmul_peak_flops_per_s": peak, "cases": rows})


if __name__ == "__main__":
  main()
