"""Decoder-only rank-classification speed: scoring from the prompt's KV cache vs the naive
recipe (prompt + option as one sequence, a full pass per option), same prompts.

Run: python benchmarks/decoder_eval_scoring.py [--configs llama-tiny] [--max_examples 2]
Prints and writes benchmarks/results/decoder_eval_scoring.json. Prompts as in
eval_scoring.py (held-out BIG-bench suite, fitted to 2048 tokens, seed 0), random weights:
  - fast:  decoder_scoring.DecoderScorer.rank: each prompt prefilled once into the KV
           cache, all options scored in one chunked pass over the repeated cache;
  - naive: DecoderScorer.rank_naive: a full forward pass of prompt + option per option,
           every row padded to 2048 + the option bucket;
  - naive_bucketed: the naive recipe with the fast path's length buckets.
Every variant is compiled on a warm-up pass first (the timed pass is checked to compile
nothing); figures are steady-state prompts per second, and the scores are compared.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)
import eval_scoring


def _compiled() -> int:
  from symbol_tuning.evaluation import decoder_scoring  # pylint: disable=g-import-not-at-top

  return sum(f._cache_size() for f in (decoder_scoring._prefill,  # pylint: disable=protected-access
                                       decoder_scoring._score_from_cache,
                                       decoder_scoring._forward_score))


def bench(config: str, items, batch_size: int, naive_length: int, variants) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from symbol_tuning import vocab  # pylint: disable=g-import-not-at-top
  from symbol_tuning.evaluation import decoder_scoring, scoring  # pylint: disable=g-import-not-at-top

  model = scoring.load_model(f"random:{config}", vocab_size=vocab.resolve().vocab_size)
  scorer = decoder_scoring.make_scorer(model, batch_size=batch_size)
  requests = [scoring.Request(it.input_ids, it.option_ids) for it in items]
  scorer.min_target_length = scorer.target_length(requests)
  runs = {
      "fast": lambda reqs: scorer.rank(reqs),
      "naive": lambda reqs: scorer.rank_naive(reqs, fixed_length=naive_length),
      "naive_bucketed": lambda reqs: scorer.rank_naive(reqs, bucketed=True),
  }
  warm = {"fast": requests, "naive": requests[:1], "naive_bucketed": requests}
  out = {"config": config,
         "num_params": int(sum(np.size(x) for x in jax.tree.leaves(model.params)))}
  scores = {}
  for name in variants:
    _, warm_s = eval_scoring.timed(lambda: runs[name](warm[name]))
    before = _compiled()
    scores[name], seconds = eval_scoring.timed(lambda: runs[name](requests))
    assert _compiled() == before, f"{name}: compiled during the timed pass"
    out[name] = {"seconds": round(seconds, 3), "examples_per_s": round(len(requests) / seconds, 3),
                 "warmup_seconds": round(warm_s, 2)}
    print(f"  {config:10s} {name:15s} {len(requests) / seconds:8.3f} examples/s "
          f"({seconds:.1f} s; warm-up {warm_s:.1f} s)", flush=True)
  for name in variants:
    if name != "fast":
      diff = max(float(np.max(np.abs(a - b))) for a, b in zip(scores["fast"], scores[name]))
      out[name]["max_abs_score_diff_vs_fast"] = diff
      out[f"speedup_vs_{name}"] = round(out[name]["seconds"] / out["fast"]["seconds"], 2)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="llama-tiny")
  parser.add_argument("--settings", default="symbols")
  parser.add_argument("--max_examples", type=int, default=2, help="queries per task")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--input_length", type=int, default=2048)
  parser.add_argument("--variants", default="fast,naive,naive_bucketed")
  args = parser.parse_args()
  common.setup_bigbench()
  items = eval_scoring.prompts_for(args.settings.split(","), args.max_examples, args.input_length)
  lengths = sorted(len(it.input_ids) for it in items)
  options = sum(len(it.options) for it in items)
  print(f"{len(items)} prompts ({options} options) from the bigbench suite; input tokens: "
        f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
  results = [bench(c, items, args.batch_size, args.input_length, args.variants.split(","))
             for c in args.configs.split(",")]
  for r in results:
    print(f"{r['config']}: fast {r['fast']['examples_per_s']:.2f} examples/s, naive "
          f"{r['naive']['examples_per_s']:.2f} -> speed-up {r['speedup_vs_naive']:.2f}x "
          f"(vs naive with the same buckets: {r.get('speedup_vs_naive_bucketed', 'n/a')}x)")
  common.write("decoder_eval_scoring", {
      "suite": "bigbench", "settings": args.settings.split(","), "vocabulary": "local",
      "num_prompts": len(items), "num_options": options, "batch_size": args.batch_size,
      "input_length": args.input_length, "input_tokens_median": lengths[len(lengths) // 2],
      "input_tokens_max": lengths[-1], "results": results})


if __name__ == "__main__":
  main()
