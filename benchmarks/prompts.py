"""Prompt building speed, where the seqio pipeline's time goes, and prompt statistics.

Run: python benchmarks/prompts.py [--num 20000] [--repeats 3] [--stats 10000] [--cores 1 2]
Prints and writes benchmarks/results/prompts.json:
  - python_prompts_per_s_per_core: the prompt builder alone (one process, one core), over
    the mixture's tasks at their mixing rates, each prompt fitted to 2048 input tokens and
    tokenized (the work seqio's preprocessor does per example). "cold" is the first pass,
    which tokenizes every example for the first time; "warm" a second pass over other
    prompts, the steady state of a training run (token ids of examples are memoised);
  - pipeline: prompts per second through seqio.get_dataset("symbol_tuning_bigbench", ...)
    with the best-fit feature converter at 2048/512, rows read in batches of 32 as the
    trainer reads them, in a fresh process pinned to 1 and to 2 cores, with prompts built
    in that process ($SYMBOL_TUNING_PROMPT_WORKERS=0, what auto picks on 2 cores or fewer)
    and, on the most cores, by a prompt worker process per core; its profile: CPU time per
    prompt in the main process (tf.data: seeds, batching, tensors, mixing, packing; and the
    building when done there) and in the workers. Timing starts after 1,000 prompts and a
    garbage collection (start-up's ~700k new objects would otherwise cost full collections
    of ~0.3 s each in the timed window);
  - builder_over_pipeline: one core's builder rate over the rate with workers, measured
    --repeats times, each pipeline run right after a builder pass (this VM's speed drifts),
    and their median; two_process_speed: how fast each of two busy processes runs here
    against one alone (2 "cores" are not twice one core when they share a physical core);
  - the CPU time one trivial per-example tf.data map adds (why the pipeline runs none), and
    that mixing 18 streams adds, with TensorFlow's sample_from_datasets and with ours;
  - stats over --stats prompts from the seqio pipeline: spread of k, templates and symbol
    kinds, the share of prompts that dropped exemplars to fit, prompts whose query was cut.
"""
import argparse
import gc
import json
import os
import pathlib
import random
import subprocess
import sys
import time

import common  # pylint: disable=unused-import  (sets the environment first)


def builder_passes(num: int):
  """A function that times one pass of the prompt builder alone over `num` prompts (one
  process, one core) and returns its prompts/s; `offset` picks other queries and seeds."""
  import seqio  # pylint: disable=g-import-not-at-top

  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from symbol_tuning.data import pipeline, prompts  # pylint: disable=g-import-not-at-top

  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  tasks = list(mixture.tasks)
  rates = [mixture.get_rate(t) for t in tasks]
  builders = [pipeline.PromptBuilder(t.source.spec, "train", 2047) for t in tasks]
  rng = random.Random(0)
  picks = rng.choices(range(len(tasks)), weights=rates, k=num)
  for b in builders:  # symbol pools, data
    b.build(0, 0)

  def one_pass(offset):
    gc.collect()  # as before the pipeline's timed window
    start = time.perf_counter()
    for i, t in enumerate(picks):
      b = builders[t]
      try:
        p = b.build((i + offset) % len(b.queries), i + offset)  # fitted, with input ids
      except prompts.PromptError:
        continue  # counted and skipped by the pipeline too
      b.pieces(p.targets)
    return num / (time.perf_counter() - start)

  return one_pass


def two_process_speed(iterations: int = 3_000_000, rounds: int = 5) -> float:
  """How fast each of two CPU-bound processes runs beside the other, against one alone
  (1.0: two independent cores; a VM's two vCPUs can share one physical core): the median
  over `rounds` of one process alone then two at once, so a drift in the machine's speed
  shows as spread, not as the figure."""
  code = ("import time; s = time.process_time(); x = 0\n"
          f"for i in range({iterations}): x += i * i % 7\n"
          "print(time.process_time() - s)")
  run = lambda: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  ratios = []
  for _ in range(rounds):
    alone = float(run().communicate()[0])
    pair = [run(), run()]
    ratios.append(alone / max(float(p.communicate()[0]) for p in pair))
  return sorted(ratios)[rounds // 2]


def cpu_per_element(ds, num: int) -> float:
  """CPU microseconds per element of reading `num` elements of `ds`, in batches of 256,
  with the pipeline options our converters set."""
  from symbol_tuning.data import packing  # pylint: disable=g-import-not-at-top

  it = iter(packing.with_pipeline_options(ds.batch(256)).prefetch(2))
  next(it)
  start = time.process_time()
  for _ in range(num // 256):
    next(it)
  return (time.process_time() - start) / (num // 256 * 256) * 1e6


def tf_data_map_cost(num: int = 200_000) -> float:
  """CPU microseconds per element that one trivial map adds to a tf.data pipeline
  (range -> map to {"q": int32(x)} -> batch, against range -> batch), with the pipeline options
  our converters set: the price of every per-example map, whatever it computes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  bare = cpu_per_element(tf.data.Dataset.range(10**12), num)
  # A cast, as the old query source's map did (a map that only renames is optimised away).
  mapped = cpu_per_element(tf.data.Dataset.range(10**12).map(
      lambda x: {"q": tf.cast(x, tf.int32)}), num)
  return mapped - bare


def mixing_cost(num: int = 100_000) -> dict:
  """CPU microseconds per element of mixing 18 ragged example streams at uneven rates:
  TensorFlow's sample_from_datasets (a function per example picks its dataset) against
  symbol_tuning.data.mixing's (the same picks, drawn 256 per call); minus one stream read alone."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import mixing  # pylint: disable=g-import-not-at-top

  batch = {"inputs": tf.ragged.constant([[1, 2, 3]] * 32),
           "targets": tf.ragged.constant([[4, 1]] * 32)}
  streams = lambda: [tf.data.Dataset.from_tensors(batch).repeat().unbatch() for _ in range(18)]
  rates = list(np.linspace(0.2, 2.0, 18))
  alone = cpu_per_element(streams()[0], num)
  tf_op = cpu_per_element(tf.data.Dataset.sample_from_datasets(
      streams(), rates, seed=0, stop_on_empty_dataset=True), num)
  ours = cpu_per_element(mixing.sample_from_datasets(streams(), rates, 0), num)
  return {"tensorflow_sample_from_datasets": tf_op - alone,
          "symbol_tuning_mixing": ours - alone}


def pipeline_speed(num: int, warmup: int = 1000) -> dict:
  """Prompts/s through the packed seqio mixture, and the CPU time per prompt of this
  process (tf.data, and the building when it is done here) and of the prompt workers."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from symbol_tuning.data import prompt_workers  # pylint: disable=g-import-not-at-top
  from symbol_tuning.models.t5 import features  # pylint: disable=g-import-not-at-top

  def workers_cpu() -> float:  # seconds of CPU used so far by the live worker processes
    total = 0.0
    for pid in prompt_workers.worker_pids():
      fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total

  start = time.perf_counter()
  ds = seqio.get_dataset(
      "symbol_tuning_bigbench", task_feature_lengths={"inputs": 2048, "targets": 512},
      dataset_split="train", shuffle=True, num_epochs=None, seed=0,
      feature_converter=features.BestFitEncDecFeatureConverter(pack=True))
  # Prompts per packed row, rows in batches of 32 as the trainer reads them.
  ds = ds.map(lambda ex: tf.reduce_max(ex["encoder_segment_ids"])).batch(32).prefetch(2)
  it = ds.as_numpy_iterator()
  got = 0
  while got < warmup:  # construction, data loading, first packing buffers
    got += int(np.sum(next(it)))
  startup = time.perf_counter() - start
  # Start-up leaves ~700k young objects (TensorFlow, seqio, the data): Python's full
  # collections (~0.3 s each, holding the GIL) come every few seconds until they have aged,
  # and would land in a short timed window. A run pays them once; collect them now.
  gc.collect()
  full_collections = []
  count_full = lambda phase, info: full_collections.append(1) if (
      phase == "stop" and info["generation"] == 2) else None
  gc.callbacks.append(count_full)
  got = 0
  wall, cpu, workers = time.perf_counter(), time.process_time(), workers_cpu()
  while got < num:
    got += int(np.sum(next(it)))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  workers = workers_cpu() - workers
  gc.callbacks.remove(count_full)
  return {"prompts_per_s": got / wall, "num_prompts": got, "cores": len(os.sched_getaffinity(0)),
          "prompt_workers": prompt_workers.num_workers(), "startup_s": startup,
          "main_process_cpu_us_per_prompt": cpu / got * 1e6,
          "workers_cpu_us_per_prompt": workers / got * 1e6,
          "load_average": os.getloadavg()[0], "full_gc_collections_timed": len(full_collections)}


def pipeline_speed_on(cores: int, num: int, workers: str) -> dict:
  """pipeline_speed in a fresh process pinned to the first `cores` cores (its prompt
  workers inherit the pinning), with $SYMBOL_TUNING_PROMPT_WORKERS=workers."""
  code = (f"import os; os.sched_setaffinity(0, set(range({cores})));"
          f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r});"
          "import prompts; prompts.common.setup_bigbench();"
          f"print(json.dumps(prompts.pipeline_speed({num})))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True, env={**os.environ, "SYMBOL_TUNING_PROMPT_WORKERS": workers})
  return json.loads(done.stdout.strip().splitlines()[-1])


def rounded(run: dict) -> dict:
  return {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=20_000,
                      help="prompts per timed builder pass and pipeline run")
  parser.add_argument("--repeats", type=int, default=3,
                      help="builder / pipeline-with-workers pairs for the ratio (median)")
  parser.add_argument("--stats", type=int, default=10_000)
  parser.add_argument("--cores", type=int, nargs="*", default=[1, 2])
  args = parser.parse_args()
  if args.num < 1 or args.repeats < 1 or args.stats < 1:
    parser.error(f"--num, --repeats and --stats must be at least 1 (got {args.num}, "
                 f"{args.repeats}, {args.stats})")
  available = len(os.sched_getaffinity(0))
  cores = [c for c in args.cores if 1 <= c <= available]
  if not cores:
    parser.error(f"--cores {args.cores}: this machine has {available} cores to pin to")
  common.setup_bigbench()
  from symbol_tuning.data import vocab  # pylint: disable=g-import-not-at-top
  from symbol_tuning.commands import data  # pylint: disable=g-import-not-at-top

  one_pass = builder_passes(args.num)
  cold, warm = one_pass(0), one_pass(args.num)
  print(f"prompt builder: {warm:,.0f} prompts/s on one core, steady state "
        f"({cold:,.0f} cold), 2048-token budget")
  map_us = tf_data_map_cost()
  print(f"one trivial tf.data map adds {map_us:.1f} us of CPU per element")
  mix_us = mixing_cost()
  print(f"mixing 18 streams adds {mix_us['tensorflow_sample_from_datasets']:.1f} us of CPU per "
        f"element with TensorFlow's sample_from_datasets, "
        f"{mix_us['symbol_tuning_mixing']:.1f} us with symbol_tuning.data.mixing's (same picks)")
  pair_speed = two_process_speed()
  print(f"this machine: each of two busy processes runs at {pair_speed:.0%} of one alone")
  # Prompts built in the main process (workers 0, what auto picks on 2 cores or fewer)...
  runs = {f"{c}_cores_0_workers": pipeline_speed_on(c, args.num, "0") for c in cores}
  # ... and on the most cores by a prompt worker per core, --repeats times, each right after
  # a builder pass: the ratio compares the two at the same machine speed (a VM's speed
  # drifts by tens of percent over minutes here).
  repeats = []
  for rep in range(args.repeats):
    builder = one_pass(args.num * (rep + 2))
    run = pipeline_speed_on(max(cores), args.num, str(max(cores)))
    repeats.append({"builder_prompts_per_s": builder, "pipeline": run,
                    "builder_over_pipeline": builder / run["prompts_per_s"]})
  middle = sorted(repeats, key=lambda r: r["builder_over_pipeline"])[len(repeats) // 2]
  runs[f"{max(cores)}_cores_{max(cores)}_workers"] = middle["pipeline"]
  print("seqio pipeline (symbol_tuning_bigbench, best-fit packing at 2048/512, rows in "
        "batches of 32):")
  for r in runs.values():
    print(f"  {r['cores']} core(s), {r['prompt_workers']} prompt workers: "
          f"{r['prompts_per_s']:,.0f} prompts/s; CPU per prompt: "
          f"{r['main_process_cpu_us_per_prompt']:.0f} us in the main process (tf.data: "
          f"seeds, batching, tensors, mixing, packing{'' if r['prompt_workers'] else ', and building'}), "
          f"{r['workers_cpu_us_per_prompt']:.0f} us in the workers; start-up to 1,000 "
          f"prompts {r['startup_s']:.1f} s; load average {r['load_average']:.1f}")
  ratio = middle["builder_over_pipeline"]
  print("builder (one core) / pipeline with workers, each right after the other: "
        + ", ".join(f"{r['builder_prompts_per_s']:,.0f} / {r['pipeline']['prompts_per_s']:,.0f} = "
                    f"{r['builder_over_pipeline']:.2f}x" for r in repeats)
        + f"; median {ratio:.2f}x")
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
      "two_process_speed": round(pair_speed, 3),
      "pipeline": {c: rounded(r) for c, r in runs.items()},
      "builder_over_pipeline": round(ratio, 3),
      "builder_over_pipeline_repeats": [
          {"builder_prompts_per_s": round(r["builder_prompts_per_s"], 1),
           "pipeline_prompts_per_s": round(r["pipeline"]["prompts_per_s"], 1),
           "builder_over_pipeline": round(r["builder_over_pipeline"], 3)} for r in repeats],
      "tf_data_map_cpu_us_per_element": round(map_us, 1),
      "mixing_cpu_us_per_element": {k: round(v, 1) for k, v in mix_us.items()},
      "stats": stats})


if __name__ == "__main__":
  main()
