"""Training-step throughput and model FLOPs utilisation (MFU) on this machine.

Run: python benchmarks/train_step.py [--steps 5]
For the tiny and small configs, times the embedded trainer's jitted step (forward,
backward, Adafactor update) on full packed rows, and compares the model's FLOPs per
second with the float32 matmul peak measured in the same run. Prints and writes
benchmarks/results/train_step.json.

Model FLOPs are counted analytically (matmuls only, backward = 2x forward), the usual
MFU convention; the XLA cost-analysis count of the compiled step is reported beside it.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)
import numpy as np

from symbol_tuning.model import config as model_config
from symbol_tuning.model import network

# (config, batch, input length, target length): rows as the packed pipeline makes them.
CASES = (("tiny", 16, 1024, 32), ("small", 4, 512, 128))


def model_flops(cfg: model_config.T5Config, batch: int, enc_len: int, dec_len: int) -> float:
  """Matmul FLOPs of one training step (forward + backward = 3x forward)."""
  d, inner, mlp, vocab = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  enc_token = cfg.num_encoder_layers * (2 * 4 * d * inner + 2 * 3 * d * mlp
                                        + 2 * 2 * enc_len * inner)
  dec_token = cfg.num_decoder_layers * (
      2 * 4 * d * inner + 2 * 2 * dec_len * inner  # self-attention
      + 2 * 2 * d * inner + 2 * 2 * enc_len * inner  # cross-attention q, o and scores
      + 2 * 3 * d * mlp) + 2 * d * vocab  # MLP, logits
  cross_kv = cfg.num_decoder_layers * 2 * 2 * d * inner  # per encoder token
  forward = batch * (enc_len * (enc_token + cross_kv) + dec_len * dec_token)
  return 3.0 * forward


def packed_batch(cfg, batch, enc_len, dec_len):
  rng = np.random.default_rng(0)
  tokens = lambda n: rng.integers(2, cfg.vocab_size, (batch, n), dtype=np.int32)
  targets = tokens(dec_len)
  enc_seg, enc_pos = common.four_segments(batch, enc_len)
  dec_seg, dec_pos = common.four_segments(batch, dec_len)
  return {"encoder_input_tokens": tokens(enc_len), "decoder_target_tokens": targets,
          "decoder_input_tokens": np.roll(targets, 1, axis=1),
          "decoder_loss_weights": np.ones((batch, dec_len), np.int32),
          "encoder_segment_ids": enc_seg, "decoder_segment_ids": dec_seg,
          "encoder_positions": enc_pos, "decoder_positions": dec_pos}


def time_step(name, batch, enc_len, dec_len, steps):
  mcfg = model_config.get_config(name, dropout_rate=0.0)
  seconds, xla_flops, _ = common.time_train_step(
      network.Transformer(mcfg), lambda: network.init_params(mcfg, 0),
      packed_batch(mcfg, batch, enc_len, dec_len), steps)
  tokens = batch * (enc_len + dec_len)
  return {"config": name, "batch": batch, "input_length": enc_len, "target_length": dec_len,
          "seconds_per_step": seconds, "tokens_per_s": tokens / seconds,
          "model_flops_per_step": model_flops(mcfg, batch, enc_len, dec_len),
          "xla_flops_per_step": xla_flops}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  peak = common.print_matmul_peak()
  rows = []
  for name, batch, enc, dec in CASES:
    row = common.add_mfu(time_step(name, batch, enc, dec, args.steps), peak)
    rows.append(row)
    print(f"{name:6s} batch {batch} x {enc}/{dec}: {row['seconds_per_step']:.3f} s/step, "
          f"{row['tokens_per_s']:,.0f} tokens/s, {row['model_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"= {row['mfu']:.0%} of the measured matmul peak")
  common.write("train_step", {"matmul_peak_flops_per_s": peak, "cases": rows})


if __name__ == "__main__":
  main()
