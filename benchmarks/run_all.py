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

SCRIPTS = {  # name -> (script, quick arguments)
    "prompts": ("prompts.py", ["--num", "2000", "--stats", "2000"]),
    "packing": ("packing.py", ["--rows", "128"]),
    "train_step": ("train_step.py", ["--steps", "3"]),
    "eval_scoring": ("eval_scoring.py", []),
}


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
    cmd = [sys.executable, str(here / script)] + (quick if args.quick else [])
    subprocess.run(cmd, check=True, cwd=here)
    collected[name] = json.loads((common.RESULTS_DIR / f"{name}.json").read_text())
  path = common.RESULTS_DIR / "all.json"
  path.write_text(json.dumps(collected, indent=1))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
