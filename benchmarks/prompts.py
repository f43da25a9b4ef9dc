"""Prompt building speed and prompt statistics for the symbol_tuning_bigbench mixture.

Run: python benchmarks/prompts.py [--num 4000] [--stats 10000]
Prints and writes benchmarks/results/prompts.json:
  - python_prompts_per_s_per_core: the prompt builder alone (one process, one core), over
    the mixture's tasks at their mixing rates, each prompt fitted to 2048 input tokens and
    tokenized (the work seqio's preprocessor does per example). "cold" is the first pass,
    which tokenizes every example for the first time; "warm" a second pass over other
    prompts, the steady state of a training run (token ids of examples are memoised);
  - seqio_prompts_per_s: the full seqio mixture pipeline (tf.data, 2 cores here);
  - stats over --stats prompts from the seqio pipeline: spread of k, templates and symbol
    kinds, the share of prompts that dropped exemplars to fit, prompts whose query was cut.
"""
import argparse
import random
import time

import common  # pylint: disable=unused-import  (sets the environment first)


def python_builder_speed(num: int) -> tuple[float, float]:
  import seqio  # pylint: disable=g-import-not-at-top

  import symbol_tuning.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from symbol_tuning import pipeline  # pylint: disable=g-import-not-at-top

  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  tasks = list(mixture.tasks)
  rates = [mixture.get_rate(t) for t in tasks]
  builders = [pipeline.PromptBuilder(t.source.spec, "train", 2047) for t in tasks]
  rng = random.Random(0)
  picks = rng.choices(range(len(tasks)), weights=rates, k=num)
  for b in builders:  # symbol pools, data
    b.build(0, 0)

  def one_pass(offset):
    start = time.perf_counter()
    for i, t in enumerate(picks):
      b = builders[t]
      try:
        p = b.build((i + offset) % len(b.queries), i + offset)  # fitted, with input ids
      except pipeline.prompts.PromptError:
        continue  # counted and skipped by the pipeline too
      b.pieces(p.targets)
    return num / (time.perf_counter() - start)

  return one_pass(0), one_pass(num)


def seqio_speed(num: int) -> float:
  from symbol_tuning.commands import data  # pylint: disable=g-import-not-at-top

  it = data.records("symbol_tuning_bigbench", "train", num + 200, 0, 2048, 512)
  for _ in range(200):  # start-up: data loading, tf.data tracing
    next(it)
  start = time.perf_counter()
  n = sum(1 for _ in it)
  return n / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=4000)
  parser.add_argument("--stats", type=int, default=10_000)
  args = parser.parse_args()
  common.setup_bigbench()
  from symbol_tuning import vocab  # pylint: disable=g-import-not-at-top
  from symbol_tuning.commands import data  # pylint: disable=g-import-not-at-top

  cold, warm = python_builder_speed(args.num)
  print(f"prompt builder: {warm:,.0f} prompts/s on one core, steady state "
        f"({cold:,.0f} cold), 2048-token budget")
  pipeline_rate = seqio_speed(args.num)
  print(f"seqio pipeline: {pipeline_rate:,.0f} prompts/s on {common.machine()['cpu_count']} cores")
  stats = data.prompt_stats(
      data.records("symbol_tuning_bigbench", "train", args.stats, 1, 2048, 512),
      vocab.TokenCounter())
  print(f"statistics over {stats['num_prompts']} prompts:")
  for key in ("k_drawn", "template", "symbol_kind"):
    print(f"  {key:12s} " + "  ".join(f"{k}: {v:.1%}" for k, v in stats[key].items()))
  print(f"  exemplars dropped to fit: {stats['share_with_dropped_exemplars']:.1%} of prompts")
  print(f"  prompts whose query was cut: {stats['num_query_cut']}")
  common.write("prompts", {
      "mixture": "symbol_tuning_bigbench", "input_length": 2048, "vocabulary": "local",
      "python_prompts_per_s_per_core": round(warm, 1),
      "python_prompts_per_s_per_core_cold": round(cold, 1), "num_prompts_timed": args.num,
      "seqio_prompts_per_s": round(pipeline_rate, 1), "stats": stats})


if __name__ == "__main__":
  main()
