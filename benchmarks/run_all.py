"""Runs every benchmark and writes one JSON file with all figures.

Run: python benchmarks/run_all.py [--quick]
Each script runs in its own process (so one's threads and caches do not colour another's
timings) and writes benchmarks/results/<name>.json; this collects them into
benchmarks/results/all.json, with the machine they were measured on.
"""
import argparse
import json
import pathlib
import subprocess
import sys

import common

from symbol_tuning.models import registry

SCRIPTS = {  # name -> (script, quick arguments)
    "prompts": ("prompts.py", ["--num", "10000", "--stats", "2000"]),
    "export": ("export.py", ["--num", "10000", "--repeats", "1"]),
    "resume": ("resume.py", ["--step", "200"]),
    "packing": ("packing.py", ["--rows", "128"]),
    "train_step": ("train_step.py", ["--steps", "3"]),
    "eval_scoring": ("eval_scoring.py", []),
    "kv_cache_memory": ("kv_cache_memory.py", []),
    "trainer_vs_t5x": ("trainer_vs_t5x.py", ["--quick"]),  # needs t5x (.ci/install_t5x.sh)
    "trainer_vs_t5x_hlo": ("trainer_vs_t5x_hlo.py", []),  # needs t5x; compiles, trains nothing
    "cache": ("cache.py", ["--num", "10000", "--per-label", "50"]),  # needs apache-beam
    "hf_parity": ("hf_parity.py", []),  # needs torch and transformers
}
# The scripts that take --family run once more per other model family (results
# <family>_<name>.json, e.g. decoder_train_step.json).
FAMILY_SCRIPTS = ("packing", "train_step", "eval_scoring")
for _family in registry.FAMILIES:
  for _name in FAMILY_SCRIPTS:
    if _family != common.DEFAULT_FAMILY:
      _script, _quick = SCRIPTS[_name]
      SCRIPTS[common.result_name(_name, _family)] = (_script, _quick + ["--family", _family])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller samples")
  parser.add_argument("--only", nargs="*", default=list(SCRIPTS))
  args = parser.parse_args()
  here = pathlib.Path(__file__).resolve().parent
  collected = {"machine": common.machine()}
  for name in args.only:
    script, quick = SCRIPTS[name]
    print(f"== {name}", flush=True)
    family = quick[quick.index("--family"):] if "--family" in quick else []
    cmd = [sys.executable, str(here / script)] + (quick if args.quick else family)
    subprocess.run(cmd, check=True, cwd=here)
    collected[name] = json.loads((common.RESULTS_DIR / f"{name}.json").read_text())
  path = common.RESULTS_DIR / "all.json"
  path.write_text(json.dumps(collected, indent=1))
  print(f"wrote {path}")


def markdown_table() -> str:
  """The README's benchmark table, from the JSON files in benchmarks/results/."""
  load = lambda name: json.loads((common.RESULTS_DIR / f"{name}.json").read_text())
  rows = []
  p = load("prompts")
  rows.append(("prompts built per second per core, `symbol_tuning_bigbench`, fitted and "
               "tokenized to 2048 (steady state / cold)",
               f"{p['python_prompts_per_s_per_core']:,.0f} / "
               f"{p['python_prompts_per_s_per_core_cold']:,.0f}", "prompts.py"))
  runs = p["pipeline"]
  for r in runs.values():
    building = ("prompt workers: " + f"{r['prompt_workers']} processes"
                if r["prompt_workers"] else "prompts built in the main process")
    rows.append((f"prompts per second through `seqio.get_dataset(symbol_tuning_bigbench)` "
                 f"with best-fit packing at 2048/512, {r['cores']} "
                 f"core{'s' * (r['cores'] != 1)}, {building}; CPU per prompt in the main "
                 "process / in the workers",
                 f"{r['prompts_per_s']:,.0f}; {r['main_process_cpu_us_per_prompt']:.0f} / "
                 f"{r['workers_cpu_us_per_prompt']:.0f} us", "prompts.py"))
  rows.append(("builder alone (one core) / pipeline with prompt workers, each pipeline run "
               "right after a builder pass: median (each pair)",
               f"{p['builder_over_pipeline']:.2f}x ("
               + ", ".join(f"{r['builder_prompts_per_s']:,.0f} / "
                           f"{r['pipeline_prompts_per_s']:,.0f}"
                           for r in p["builder_over_pipeline_repeats"]) + ")", "prompts.py"))
  rows.append(("this machine: speed of each of two busy processes against one alone",
               f"{p['two_process_speed']:.0%}", "prompts.py"))
  if "tf_data_map_cpu_us_per_element" in p:
    rows.append(("CPU that one trivial per-example tf.data map adds, per element",
                 f"{p['tf_data_map_cpu_us_per_element']:.1f} us", "prompts.py"))
  m = p["mixing_cpu_us_per_element"]
  rows.append(("CPU that mixing 18 streams adds per element: TensorFlow's sample_from_datasets"
               " / symbol_tuning.data.mixing (same picks)",
               f"{m['tensorflow_sample_from_datasets']:.1f} / {m['symbol_tuning_mixing']:.1f} us",
               "prompts.py"))
  x = load("export")
  rows.append((f"`symbol-tuning export symbol_tuning_bigbench` at 2048/512, {x['cores']} cores, "
               f"prompts written per second after start-up (runs of {x['num_prompts']:,}); the "
               "packed pipeline in-process right after it; pipeline / export: median (each "
               f"pair); load average {x['load_average']:.1f}",
               f"{x['export_prompts_per_s']:,.0f}; {x['pipeline_prompts_per_s']:,.0f}; "
               f"{x['pipeline_over_export']:.2f}x ("
               + ", ".join(f"{r['pipeline_prompts_per_s']:,.0f} / {r['export_prompts_per_s']:,.0f}"
                           for r in x["pairs"]) + ")", "export.py"))
  s = p["stats"]
  rows.append((f"over {s['num_prompts']:,} prompts: share that dropped exemplars to fit; "
               "queries cut", f"{s['share_with_dropped_exemplars']:.1%}; {s['num_query_cut']}",
               "prompts.py"))
  packed = {(r["mixture"], r.get("packer")): r for r in load("packing")["results"]}
  k = packed[("symbol_tuning_bigbench", "best_fit")]
  g = packed[("symbol_tuning_bigbench", "seqio_greedy")]
  rows.append(("packed rows of `symbol_tuning_bigbench` at 2048/512, best-fit (ours) vs "
               "seqio's greedy packing: input tokens used", f"{k['encoder_fill']:.1%} vs "
               f"{g['encoder_fill']:.1%}", "packing.py"))
  rows.append(("same, best-fit: target tokens used; most target tokens any row needed; "
               f"input tokens used at 2048/{k['suggested_target_length']}",
               f"{k['decoder_fill']:.1%}; {k['max_target_tokens_in_a_row']}; "
               f"{k['with_suggested_target_length']['encoder_fill']:.1%}", "packing.py"))
  r = load("resume")
  secs = r["resume_seconds"]
  b, s0, ss, sk = r["resume_breakdown_seconds"], "restore_0", f"restore_{r['step']}", f"skip_{r['step']}"
  rows.append((f"resume the data stream in a fresh process (batch {r['batch_size']}, 2048/32), "
               f"seconds to the first batch: from the saved position at step 0 / "
               f"{r['step']:,} (of which restoring); by skipping to step {r['step']:,} "
               "(before); position saved in (size)",
               f"{secs[s0]:.1f} / {secs[ss]:.1f} ({b[s0]['restore']:.1f} / "
               f"{b[ss]['restore']:.1f}); {secs[sk]:.1f}; {r['save_seconds']:.1f} s "
               f"({r['saved_megabytes']:.0f} MB)", "resume.py"))
  if (common.RESULTS_DIR / "cache.json").is_file():
    c = load("cache")
    lengths = f"{c['lengths']['inputs']}/{c['lengths']['targets']}"
    rows.append((f"seqio cache_tasks_main, Beam DirectRunner, `symbol_tuning_bigbench` at "
                 f"{lengths} ({c['cached_prompts']:,} prompts): wall time; size; per 1,000 "
                 "prompts", f"{c['beam_direct_runner_seconds']:.0f} s; "
                 f"{c['cache_bytes'] / 1e6:.0f} MB; {c['megabytes_per_1000_prompts']:.2f} MB",
                 "cache.py"))
    rows.append((f"packed prompts per second at {lengths}, read from that cache / built on the "
                 "fly (trainer's data path, pairs); cached / uncached: median",
                 ", ".join(f"{a:,.0f} / {b:,.0f}" for a, b in zip(
                     c["cached_prompts_per_s"], c["uncached_prompts_per_s"]))
                 + f"; {c['cached_over_uncached']:.1f}x", "cache.py"))
  t = load("train_step")
  for case in t["cases"]:
    rows.append((f"training step, {case['config']} ({case['batch']} x "
                 f"{'/'.join(map(str, case['lengths'].values()))}): tokens/s; MFU vs the "
                 f"measured matmul peak "
                 f"({case.get('matmul_peak_flops_per_s', t['matmul_peak_flops_per_s']) / 1e9:.0f}"
                 " GFLOP/s)",
                 f"{case['tokens_per_s']:,.0f}; {case['mfu']:.0%}", "train_step.py"))
  v = load("trainer_vs_t5x")
  for case in v["step_time"]:
    if "error" in case:
      rows.append((f"training step, Flan-T5 small's shape ({case['batch']} x "
                   f"{case['input_length']}/{case['target_length']}, "
                   f"{case['activation_dtype']}), ours vs t5x.train", "failed: "
                   f"{case['error'][:80]}", "trainer_vs_t5x.py"))
      continue
    fastest = min(case["ours_step_seconds"]), min(case["t5x_step_seconds"])
    rows.append((f"training step, Flan-T5 small's shape ({case['batch']} x "
                 f"{case['input_length']}/{case['target_length']}, {case['activation_dtype']}), "
                 "ours vs t5x.train on the same config, "
                 f"{len(case['ours_step_seconds'])} steps each in {case['rounds']} alternating "
                 "runs, ours vs t5x: median seconds per step (t5x / ours); fastest step (t5x / "
                 "ours); peak memory (max RSS)",
                 f"{case['ours_seconds_per_step']:.1f} vs {case['t5x_seconds_per_step']:.1f} "
                 f"({case['t5x_over_ours']:.2f}x); {fastest[0]:.1f} vs {fastest[1]:.1f} "
                 f"({fastest[1] / fastest[0]:.2f}x); {case['ours_peak_rss_gib']:.1f} vs "
                 f"{case['t5x_peak_rss_gib']:.1f} GiB", "trainer_vs_t5x.py"))
  e = load("eval_scoring")
  for r in e["results"]:
    rows.append((f"rank-classification scoring, {r['config']}, bigbench suite: fast vs "
                 "naive repeated-prompt (examples/s, speed-up)",
                 f"{r['fast']['examples_per_s']:.2f} vs {r['naive']['examples_per_s']:.2f} "
                 f"({r['speedup_vs_naive']:.1f}x)", "eval_scoring.py"))
  m = p["machine"]
  lines = [f"Measured on {m['processor']}, {m['cpu_count']} cores, Python {m['python']} "
           f"({m['platform']}).", "", "| figure | value | script |", "|---|---|---|"]
  lines += [f"| {a} | {b} | `benchmarks/{c}` |" for a, b, c in rows]
  return "\n".join(lines)


def loss_curve_table() -> str:
  """The README's table of our trainer's and t5x's losses (Training, Same result as t5x)."""
  c = json.loads((common.RESULTS_DIR / "trainer_vs_t5x.json").read_text())["loss_curves"]
  lines = ["| step | " + " | ".join(str(s) for s in c["steps"]) + " |",
           "|---|" + "---|" * len(c["steps"]),
           "| ours | " + " | ".join(f"{x:.5f}" for x in c["ours_loss"]) + " |",
           "| t5x.train | " + " | ".join(f"{x:.5f}" for x in c["t5x_loss"]) + " |"]
  return "\n".join(lines) + (
      f"\n\nLoss per target token, tiny config, float32; largest relative difference "
      f"{c['max_rel_loss_diff']:.0e}, largest parameter difference after step "
      f"{c['steps'][-1]} {c['max_abs_param_diff']:.0e} (the parameters moved by up to "
      f"{c['max_abs_param_change']:.0e}).")


if __name__ == "__main__":
  if sys.argv[1:] == ["--table"]:  # print the README tables from the stored results
    print(markdown_table())
    print()
    print(loss_curve_table())
  else:
    main()
