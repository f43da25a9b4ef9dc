"""Rank-classification speed: the fast scorer vs t5's repeated-prompt recipe, same prompts.

Run: python benchmarks/eval_scoring.py [--family t5|decoder] [--configs tiny,small]
       [--max_examples 4]
Prints and writes benchmarks/results/eval_scoring.json (T5) or <family>_eval_scoring.json.
For each model config of the family (random weights; only the shapes matter for speed), on
the held-out BIG-bench suite's prompts (--settings, --max_examples queries per task,
fitted to 2048 tokens, seed 0):
  - fast:  scoring.Scorer.rank: each prompt run once (T5: one encoder pass; decoder-only:
           one prefill into the KV cache), all label options in one pass over that
           repeated state, inputs padded to power-of-two length buckets, one batch size
           per bucket and the call's largest option count (Scorer.batches: fewest
           compilations, a little padding, which a 44-prompt sample pays more of than a
           full evaluation);
  - naive: scoring.Scorer.rank_naive: the whole prompt repeated once per option, a full
           forward pass per (prompt, option) row, every input padded to one length
           (2048, the TASK_FEATURE_LENGTHS t5x's eval runs with; a one-sequence family's
           rows 2048 + the option bucket), as t5's rank_classification preprocessor +
           score_batch do;
  - naive_bucketed: the naive recipe with the fast path's length buckets, to separate the
           gain of encoding once from the gain of bucketing.
The prompts are built twice first and both times printed (prompt_build_s_first_second):
the second is what each further evaluation in a process pays. Every variant is compiled on a
warm-up pass first (the timed pass is checked to compile nothing); figures are steady-state
examples (prompts) per second, measured in one process on the same prompts, and the scores
are compared.
"""
import argparse
import os
import time

import common  # pylint: disable=unused-import  (sets the environment first)


def prompts_for(settings, max_examples, input_length):
  from symbol_tuning.evaluation import suites  # pylint: disable=g-import-not-at-top

  units = suites.units("bigbench", settings, input_length=input_length)
  items, skipped, _ = suites.build_all(units, seed=0, max_examples=max_examples)
  if skipped:
    raise SystemExit("; ".join(s.line() for s in skipped))
  return items


# family -> (default configs, default queries per task)
DEFAULTS = {"t5": ("tiny,small", 4), "decoder": ("llama-tiny", 2)}


def bench(config: str, items, batch_size: int, naive_length: int, variants) -> dict:
  """Times each variant (fast, naive, naive_bucketed) on `items` with random weights of
  `config`; the family's inference operations count their compiled shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import vocab  # pylint: disable=g-import-not-at-top
  from symbol_tuning.evaluation import scoring  # pylint: disable=g-import-not-at-top

  model = scoring.load_model(f"random:{config}", vocab_size=vocab.resolve().vocab_size)
  scorer = scoring.Scorer(model, batch_size=batch_size)
  compiled = type(scorer.ops).compiled_count
  requests = [scoring.Request(it.input_ids, it.option_ids) for it in items]
  scorer.min_target_length = scorer.target_length(requests)  # one target shape for all calls
  runs = {
      "fast": lambda reqs: scorer.rank(reqs),
      "naive": lambda reqs: scorer.rank_naive(reqs, fixed_length=naive_length),
      "naive_bucketed": lambda reqs: scorer.rank_naive(reqs, bucketed=True),
  }
  # Warm-up compiles every shape the timed pass uses: the naive recipe has one shape (full
  # batches of one length), so one prompt does; the bucketed variants run the whole set.
  warm = {"fast": requests, "naive": requests[:1], "naive_bucketed": requests}
  out = {"config": config,
         "num_params": int(sum(np.size(x) for x in jax.tree.leaves(model.params)))}
  scores = {}
  for name in variants:
    _, warm_s = common.timed(lambda: runs[name](warm[name]))
    before = compiled()
    scores[name], seconds = common.timed(lambda: runs[name](requests))
    assert compiled() == before, f"{name}: compiled during the timed pass"
    out[name] = {"seconds": round(seconds, 3), "examples_per_s": round(len(requests) / seconds, 3),
                 "warmup_seconds": round(warm_s, 2)}
    print(f"  {config:{max(6, len(config))}s} {name:15s} {len(requests) / seconds:8.3f} "
          f"examples/s ({seconds:.1f} s; warm-up {warm_s:.1f} s)", flush=True)
  for name in variants:
    if name != "fast":
      diff = max(float(np.max(np.abs(a - b))) for a, b in zip(scores["fast"], scores[name]))
      out[name]["max_abs_score_diff_vs_fast"] = diff
      out[f"speedup_vs_{name}"] = round(out[name]["seconds"] / out["fast"]["seconds"], 2)
  return out


def main() -> None:
  """Parses the flags, times every config and writes the family's results file."""
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_family_flag(parser)
  parser.add_argument("--configs", default=None, help="default: the family's (DEFAULTS)")
  parser.add_argument("--settings", default="symbols")
  parser.add_argument("--max_examples", type=int, default=None,
                      help="queries per task (default: the family's, DEFAULTS)")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--input_length", type=int, default=2048)
  parser.add_argument("--variants", default="fast,naive,naive_bucketed")
  args = parser.parse_args()
  family = registry.get_family(args.family)
  configs, max_examples = DEFAULTS[family.name]
  args.configs = args.configs or configs
  args.max_examples = args.max_examples or max_examples
  common.setup_bigbench()
  # The suite's prompts, built twice: the second build is what every later evaluation in a
  # process pays (the first also loads the data and the symbol pools' token ids).
  build_s = []
  for _ in range(2):
    start = time.perf_counter()
    items = prompts_for(args.settings.split(","), args.max_examples, args.input_length)
    build_s.append(round(time.perf_counter() - start, 3))
  print(f"prompts built in {build_s[0]:.2f} s, again in {build_s[1]:.2f} s")
  lengths = sorted(len(it.input_ids) for it in items)
  options = sum(len(it.options) for it in items)
  print(f"{len(items)} prompts ({options} options) from the bigbench suite, settings "
        f"{args.settings}; input tokens: median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
  load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
  results = [bench(c, items, args.batch_size, args.input_length, args.variants.split(","))
             for c in args.configs.split(",")]
  load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
  print(f"load average (1 min) before / after: {load[0]} / {load[1]}")
  for r in results:
    line = ", ".join(f"{v} {r[v]['examples_per_s']:.2f} examples/s"
                     for v in ("fast", "naive", "naive_bucketed") if v in r)
    if "speedup_vs_naive" in r:
      line += (f" -> speed-up {r['speedup_vs_naive']:.2f}x (vs naive with the same buckets: "
               f"{r.get('speedup_vs_naive_bucketed', 'n/a')}x)")
    print(f"{r['config']}: {line}")
  # A one-sequence family's naive rows are --input_length + the option bucket long.
  padded = {} if family.answer_in_sequence else {"naive_padded_length": args.input_length}
  common.write(common.result_name("eval_scoring", family.name), {
      "family": family.name, "suite": "bigbench", "settings": args.settings.split(","), "vocabulary": "local",
      "num_prompts": len(items), "num_options": options, "batch_size": args.batch_size,
      "input_length": args.input_length, **padded,
      "input_tokens_median": lengths[len(lengths) // 2], "input_tokens_max": lengths[-1],
      "prompt_build_s_first_second": build_s, "load_average_before_after": load,
      "results": results})


if __name__ == "__main__":
  main()
