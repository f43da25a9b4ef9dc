"""Decoder-only training-step throughput and MFU on this machine.

Run: python benchmarks/decoder_train_step.py [--steps 3]
Times the embedded trainer's jitted step (forward, backward, Adafactor update) for the
decoder-only configs llama-tiny and llama-100m (~112M parameters) on full packed rows,
against the float32 matmul peak measured in the same run (train_step.matmul_peak).
Model FLOPs are counted analytically (matmuls only, backward = 2x forward); the XLA
cost-analysis count is reported beside it. Prints and writes
benchmarks/results/decoder_train_step.json.
"""
import argparse
import time

import common  # pylint: disable=unused-import  (sets the environment first)
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import train_step
from symbol_tuning.model import decoder_config, decoder_network
from symbol_tuning.training import partitioning, trainer as trainer_lib

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
  seg = np.repeat(np.arange(1, 5, dtype=np.int32), length // 4)[None].repeat(batch, 0)
  pos = np.tile(np.arange(length // 4, dtype=np.int32), 4)[None].repeat(batch, 0)
  return {"decoder_target_tokens": targets, "decoder_input_tokens": np.roll(targets, 1, axis=1),
          "decoder_loss_weights": np.ones((batch, length), np.int32),
          "decoder_segment_ids": seg, "decoder_positions": pos,
          "decoder_causal_attention": np.zeros((batch, length), np.int32)}


def time_step(name, batch, length, steps):
  mcfg = decoder_config.get_config(name, dropout_rate=0.0)
  tcfg = trainer_lib.TrainConfig(model_dir="/tmp/unused", mixture_or_task_name="unused",
                                 train_steps=steps, batch_size=batch, dropout_rate=0.0)
  model = decoder_network.DecoderOnlyTransformer(mcfg)
  optimizer = trainer_lib.make_optimizer(tcfg)
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.STANDARD_RULES):
    params = decoder_network.init_params(mcfg, 0)
    state = {"params": params, "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32)}
    step = jax.jit(trainer_lib.make_train_step(model, optimizer, tcfg, decoder_only=True),
                   donate_argnums=(0,))
    data = {k: jnp.asarray(v) for k, v in packed_batch(mcfg, batch, length).items()}
    rng = jax.random.PRNGKey(0)
    compiled = step.lower(state, data, rng).compile()
    cost = compiled.cost_analysis()
    xla_flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    state, metrics = step(state, data, rng)  # warm up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, data, rng)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
  return {"config": name, "batch": batch, "row_length": length,
          "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
          "seconds_per_step": seconds, "tokens_per_s": batch * length / seconds,
          "model_flops_per_step": model_flops(mcfg, batch, length), "xla_flops_per_step": xla_flops}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--configs", default=",".join(c[0] for c in CASES))
  args = parser.parse_args()
  peak = train_step.matmul_peak()
  print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({jax.device_count()} device, "
        f"{common.machine()['cpu_count']} cores)")
  rows = []
  for name, batch, length in CASES:
    if name not in args.configs.split(","):
      continue
    row = time_step(name, batch, length, args.steps)
    row["model_flops_per_s"] = row["model_flops_per_step"] / row["seconds_per_step"]
    row["mfu"] = row["model_flops_per_s"] / peak
    rows.append(row)
    print(f"{name:10s} ({row['num_params'] / 1e6:.0f}M) batch {batch} x {length}: "
          f"{row['seconds_per_step']:.3f} s/step, {row['tokens_per_s']:,.0f} tokens/s, "
          f"{row['model_flops_per_s'] / 1e9:.1f} GFLOP/s = {row['mfu']:.0%} of the measured "
          f"matmul peak")
  common.write("decoder_train_step", {"matmul_peak_flops_per_s": peak, "cases": rows})


if __name__ == "__main__":
  main()
