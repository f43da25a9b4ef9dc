"""KV-cache memory of sliding-window families: local layers hold at most the window.

Run: python benchmarks/kv_cache_memory.py [--window 256] [--batch 2] [--extra 16]
Prints a table and writes benchmarks/results/kv_cache_memory.json.
For a Mistral-like config (a window on every layer), a Gemma 2-like one (local and global
layers alternating) and a Gemma 3-like one (five local layers to a global one), each with
window W and random weights, a batch of prompts 4W tokens long is prefilled the way the
scorer does it (`DecoderInference.start`, with room for --extra option / decoding
positions). The cache's arrays after prefill are measured with `.nbytes` (keys, values and
valid flags) per layer type, against the cache of the same model with its windows
removed: every layer caching every position, the shape every layer's cache had before
local layers were bounded by the window. Also recorded: the prefill's last logits against
a full forward pass (the bounded cache changes no result), and XLA's compiled memory
figures for the prefill (arguments, outputs and temporaries).
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)

# name -> (tiny config it scales up, overrides): a small width (the cache's size does not
# depend on it) with Mistral's 4:1 grouped-query heads and head_dim 64.
SHAPE = {"vocab_size": 1024, "d_model": 256, "num_heads": 8, "num_kv_heads": 2,
         "head_dim": 64, "mlp_dim": 512}
CONFIGS = {
    "mistral-like": ("mistral-tiny", {"num_layers": 4}),
    "gemma2-like": ("gemma2-tiny", {"num_layers": 4, "layer_types": (),
                                    "query_pre_attn_scalar": 64.0}),
    "gemma3-like": ("gemma3-tiny", {"num_layers": 6, "layer_types": (),
                                    "query_pre_attn_scalar": 64.0}),
}


def cache_bytes(config, cache) -> dict:
  """{'local' / 'global': {'layers', 'bytes', 'bytes_per_layer', 'length'}} from the arrays."""
  out = {}
  for i in range(config.num_layers):
    layer = cache["decoder"][f"layers_{i}"]["self_attention"]
    kind = "local" if config.layer_window(i) else "global"
    arrays = [layer[n] for n in ("cached_key", "cached_value", "cached_valid", "cache_index")]
    entry = out.setdefault(kind, {"layers": 0, "bytes": 0,
                                  "length": int(layer["cached_key"].shape[1])})
    entry["layers"] += 1
    entry["bytes"] += sum(int(a.nbytes) for a in arrays)
  for entry in out.values():
    entry["bytes_per_layer"] = entry["bytes"] // entry["layers"]
  return out


def measure(name: str, window: int, batch: int, extra: int) -> dict:
  """Prefills 4W-token prompts with and without windows; the caches' bytes and checks."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top

  base, overrides = CONFIGS[name]
  config = registry.get_config(base, sliding_window=window, **SHAPE, **overrides)
  unbounded = config.replace(sliding_window=None, layer_types=())
  params = registry.init_params(config, 0)
  family = registry.family_of(config)
  prompt = 4 * window
  prompts = np.random.default_rng(0).integers(1, config.vocab_size, (batch, prompt)).tolist()
  out = {"config": name, "window": window, "prompt_tokens": prompt, "batch": batch,
         "cache_length": prompt + extra,
         "layer_types": ["local" if config.layer_window(i) else "global"
                         for i in range(config.num_layers)]}
  for label, cfg in (("window_bounded", config), ("every_position", unbounded)):
    ops = family.inference(cfg, params)
    start = lambda p, ops=ops: type(ops)(ops.config, p).start(prompts, batch, prompt, extra)
    last, cache, _ = start(params)
    layers = cache_bytes(cfg, cache)
    memory = jax.jit(start).lower(params).compile().memory_analysis()
    out[label] = {"layers": layers, "total_bytes": sum(e["bytes"] for e in layers.values()),
                  "prefill_compiled_bytes": {
                      "arguments": int(memory.argument_size_in_bytes),
                      "outputs": int(memory.output_size_in_bytes),
                      "temporaries": int(memory.temp_size_in_bytes)}}
    if cfg is config:  # the bounded cache changes no result
      full = family.module(cfg).apply({"params": params}, jnp.asarray(prompts),
                                      enable_dropout=False)
      out["max_abs_last_logits_diff_vs_full_pass"] = float(
          jnp.max(jnp.abs(full[:, -1] - last)))
      out["max_abs_last_logit"] = float(jnp.max(jnp.abs(full[:, -1])))  # the diff's scale
  out["total_ratio"] = round(out["every_position"]["total_bytes"]
                             / out["window_bounded"]["total_bytes"], 2)
  if "local" in out["window_bounded"]["layers"]:
    out["local_layer_ratio"] = round(
        out["every_position"]["layers"]["global"]["bytes_per_layer"]
        / out["window_bounded"]["layers"]["local"]["bytes_per_layer"], 2)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--window", type=int, default=256)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--extra", type=int, default=16,
                      help="cache positions after the prompt (options, decoding)")
  parser.add_argument("--configs", default=",".join(CONFIGS))
  args = parser.parse_args()
  results = [measure(name, args.window, args.batch, args.extra)
             for name in args.configs.split(",")]
  mib = lambda n: f"{n / 2**20:8.2f} MiB"
  print(f"window W={args.window}, prompt 4W={4 * args.window} tokens, batch {args.batch}, "
        f"cache length {4 * args.window + args.extra}")
  print(f"{'config':13s} {'layers':>13s} {'local/layer':>12s} {'global/layer':>12s} "
        f"{'total':>12s} {'old total':>12s} {'ratio':>6s} {'temp (prefill)':>15s}")
  for r in results:
    bounded, old = r["window_bounded"], r["every_position"]
    per = lambda kind: (mib(bounded["layers"][kind]["bytes_per_layer"])
                        if kind in bounded["layers"] else f"{'-':>12s}")
    counts = "/".join(str(bounded["layers"].get(k, {}).get("layers", 0))
                      for k in ("local", "global"))
    print(f"{r['config']:13s} {counts + ' loc/glob':>13s} {per('local'):>12s} "
          f"{per('global'):>12s} {mib(bounded['total_bytes']):>12s} "
          f"{mib(old['total_bytes']):>12s} {r['total_ratio']:5.2f}x "
          f"{mib(bounded['prefill_compiled_bytes']['temporaries'])} vs "
          f"{mib(old['prefill_compiled_bytes']['temporaries'])}")
    print(f"{'':13s} last logits vs the full pass: max abs diff "
          f"{r['max_abs_last_logits_diff_vs_full_pass']:.1e} (logits up to "
          f"{r['max_abs_last_logit']:.1f})")
  common.write("kv_cache_memory", {"window": args.window, "batch": args.batch,
                                   "extra": args.extra, "results": results})


if __name__ == "__main__":
  main()
