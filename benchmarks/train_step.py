"""Training-step throughput and model FLOPs utilisation (MFU) on this machine.

Run: python benchmarks/train_step.py [--family t5|decoder] [--steps 5] [--configs ...]
     python benchmarks/train_step.py --family decoder --arch all|llama|gemma2|...
For a model family's configs (T5: tiny and small; decoder: llama-tiny and the ~100M config of
each architecture, e.g. llama-100m, gemma2-100m), times the embedded trainer's jitted step
(forward, backward, Adafactor update) on full packed rows (four examples each), and compares
the model's FLOPs per second with the float32 matmul peak measured right before each config.
`--arch` picks decoder architectures' ~100M configs (`all`: every one). Prints and writes
benchmarks/results/train_step.json (T5) or <family>_train_step.json (with --arch:
decoder_train_step_<arch>.json, e.g. decoder_train_step_all.json).

Model FLOPs are counted analytically by the family (ModelFamily.train_flops: matmuls only,
backward = 2x forward), the usual MFU convention; the XLA cost-analysis count of the
compiled step is reported beside it. The load average (1, 5, 15 min) before and after the
run is recorded: other processes on the machine lower the figures.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)
import os

import jax
import numpy as np

from symbol_tuning.models import registry
from symbol_tuning.models.decoder.config import ARCH_100M

# family -> (config, batch, lengths): rows as the family's packed pipeline makes them.
CASES = {
    "t5": (("tiny", 16, {"inputs": 1024, "targets": 32}),
           ("small", 4, {"inputs": 512, "targets": 128})),
    "decoder": (("llama-tiny", 16, {"targets": 1024}),
                *((name, 2, {"targets": 512}) for name in ARCH_100M.values())),
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


def features(cfg) -> str:
  """What a decoder config adds to Llama's layout, for the README table."""
  out = ["GeGLU" if cfg.activation.startswith("gelu") else "SwiGLU"]
  out += ["q/k/v biases"] * cfg.qkv_bias + ["QK-norm"] * cfg.qk_norm
  local = sum(cfg.layer_window(i) is not None for i in range(cfg.num_layers))
  if local:
    out.append(f"window {cfg.sliding_window} on {local} of {cfg.num_layers} layers")
  out += ["sandwich norms"] * cfg.post_norms
  if cfg.attn_logit_softcap or cfg.final_logit_softcap:
    out.append(f"soft-capping {cfg.attn_logit_softcap:g}/{cfg.final_logit_softcap:g}")
  return ", ".join(out + ["tied head"] * cfg.tie_embeddings)


def markdown(family, rows, load) -> str:
  """The README's per-config table of this run."""
  lines = [f"Load average {load[0]:.2f} at the start.",
           "", "| config | parameters | architecture features | s/step | tokens/s | GFLOP/s "
           "| matmul peak GFLOP/s | MFU |",
           "|---|---|---|---|---|---|---|---|"]
  for row in rows:
    cfg = family.get_config(row["config"])
    lines.append(f"| {row['config']} | {row['num_params'] / 1e6:.0f}M | "
                 f"{features(cfg) if family.name == 'decoder' else ''} | "
                 f"{row['seconds_per_step']:.2f} | {row['tokens_per_s']:,.0f} | "
                 f"{row['model_flops_per_s'] / 1e9:.1f} | "
                 f"{row['matmul_peak_flops_per_s'] / 1e9:.1f} | {row['mfu']:.0%} |")
  return "\n".join(lines)


def select_cases(family, configs, arch):
  """The (config, batch, lengths) cases to run: the family's, or those named by --configs
  or --arch (decoder architectures' ~100M configs)."""
  cases = CASES[family.name]
  if arch:
    if family.name != "decoder":
      raise SystemExit(f"--arch picks decoder-only architectures, not {family.name} configs")
    names = ARCH_100M.values() if arch == "all" else [ARCH_100M[a] for a in arch.split(",")]
    cases = [c for c in cases if c[0] in names]
  if configs:
    unknown = set(configs.split(",")) - {c[0] for c in cases}
    if unknown:
      raise SystemExit(f"--configs: no {family.name} case {', '.join(sorted(unknown))}; "
                       f"cases: {', '.join(c[0] for c in cases)}")
    cases = [c for c in cases if c[0] in configs.split(",")]
  return cases


def check_arch(value: str) -> str:
  """--arch: 'all' or comma-separated names in ARCH_100M."""
  unknown = set(value.split(",")) - set(ARCH_100M) - {"all"}
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown architecture {', '.join(sorted(unknown))}; "
                                     f"choose from all, {', '.join(ARCH_100M)}")
  return value


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_family_flag(parser)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--configs", default=None, help="comma-separated (default: the cases)")
  parser.add_argument("--arch", type=check_arch, default=None,
                      help=f"decoder architectures' ~100M configs: all, or comma-separated "
                           f"from {', '.join(ARCH_100M)}")
  args = parser.parse_args()
  family = registry.get_family(args.family)
  cases = select_cases(family, args.configs, args.arch)
  load_before = os.getloadavg()
  print(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
  rows = []
  for name, batch, lengths in cases:
    # The peak right before each config: a load that changes during the run moves both.
    peak = common.print_matmul_peak()
    row = common.add_mfu(time_step(family, name, batch, lengths, args.steps), peak)
    row["matmul_peak_flops_per_s"] = peak
    rows.append(row)
    print(f"{name:12s} ({row['num_params'] / 1e6:.0f}M) batch {batch} x "
          f"{'/'.join(map(str, lengths.values()))}: {row['seconds_per_step']:.3f} s/step, "
          f"{row['tokens_per_s']:,.0f} tokens/s, {row['model_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"= {row['mfu']:.0%} of the measured matmul peak", flush=True)
  print(markdown(family, rows, load_before))
  name = common.result_name("train_step", family.name)
  if args.arch:  # beside, not over, the default run's file
    name += "_" + args.arch.replace(",", "_")
  common.write(name, {"family": family.name,
                      "matmul_peak_flops_per_s": [r["matmul_peak_flops_per_s"] for r in rows],
                      "load_average_before": load_before, "load_average_after": os.getloadavg(),
                      "steps": args.steps, "cases": rows})


if __name__ == "__main__":
  main()
