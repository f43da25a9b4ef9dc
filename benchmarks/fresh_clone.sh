#!/usr/bin/env bash
# Fresh-clone check: clone this repo into a new temporary directory (no ../shared beside it,
# nothing of this workspace's data), run README.md's two Quick start commands exactly as
# written, as a new user's machine would: pip with no configuration and no local wheel
# folder (PIP_CONFIG_FILE=/dev/null, PIP_FIND_LINKS unset), an empty pip cache (every wheel
# downloaded from PyPI), an empty symbol_tuning cache (the BIG-bench tasks come from the
# package's archive), none of the project's environment variables, and each command in a
# fresh .venv. Then check that the demo's outputs exist and are well formed.
#   bash benchmarks/fresh_clone.sh                 both commands (about 25 minutes on 2 cores)
#   bash benchmarks/fresh_clone.sh --install-only  only each command's steps up to its pip install
# Prints the time of each step (the parts joined by &&) and the size of .venv after each
# command, and writes them to benchmarks/results/fresh_clone.json.
set -euo pipefail
install_only=0 status=0
[ "${1:-}" = "--install-only" ] && install_only=1
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"  # timings, generated scripts, the empty caches
work="$scratch/clone/symbol-tuning"  # its parent holds nothing else: no ../shared
trap 'rm -rf "$scratch"' EXIT
git clone -q "$repo" "$work"
cd "$work"
[ ! -e ../shared ] || { echo "../shared exists beside the clone" >&2; exit 1; }
export PIP_CONFIG_FILE=/dev/null PIP_CACHE_DIR="$scratch/pip-cache"
export SYMBOL_TUNING_CACHE="$scratch/symbol_tuning-cache"  # as ~/.cache/symbol_tuning, empty
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
unset BIGBENCH_DIR SYMBOL_TUNING_SHARED SYMBOL_TUNING_DATA_DIR SYMBOL_TUNING_VOCAB CI
# The first two ```bash blocks of the Quick start are the two commands.
mapfile -t commands < <(python3 - <<'PY'
import re
text = open("README.md", encoding="utf-8").read()
quick = text.split("## Quick start", 1)[1]
blocks = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)[:2]
for block in blocks:
    print(" ".join(line.rstrip("\\").strip() for line in block.strip().splitlines()))
PY
)
[ "${#commands[@]}" -eq 2 ] || { echo "could not find the two Quick start commands" >&2; exit 1; }
timings="$scratch/timings.tsv"
: > "$timings"
for i in 0 1; do
  echo "== README command $((i + 1)): ${commands[$i]}"
  rm -rf .venv  # each command measured on a fresh venv, as on a new machine
  # One shell runs the command's parts in order (activate must carry over), timing each.
  script="$scratch/command$i.sh"
  echo "set -e" > "$script"
  python3 - "${commands[$i]}" "$install_only" "$timings" "$((i + 1))" >> "$script" <<'PY'
import shlex, sys
command, install_only, timings, number = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
for part in (p.strip() for p in command.split(" && ")):
    print(f"t0=$EPOCHREALTIME; {part}")
    print(f"printf '%s\\t%s\\t%s\\n' {number} {shlex.quote(part)} \"$t0 $EPOCHREALTIME\""
          f" >> {shlex.quote(timings)}")
    if "pip install" in part:
        print(f"printf '%s\\t%s\\t%s\\n' {number} venv_bytes \"$(du -sb .venv | cut -f1)\""
              f" >> {shlex.quote(timings)}")
        if install_only:
            break
PY
  bash "$script" 2>&1 | tee "$scratch/command$i.log" || {
    status=$?; echo "README command $((i + 1)) failed (exit $status)" >&2; }
done
python3 - "$timings" "$repo/benchmarks/results/fresh_clone.json" "$install_only" \
  "$(git rev-parse HEAD)" "$(nproc)" <<'PY'
import json, os, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1], encoding="utf-8")]
result = {"install_only": sys.argv[3] == "1", "commit": sys.argv[4], "cores": int(sys.argv[5]),
          "load_average_at_end": os.getloadavg(), "shared_beside_clone": False, "commands": {}}
for number, part, value in rows:
    entry = result["commands"].setdefault(number, {"steps": []})
    if part == "venv_bytes":
        entry["venv_gb"] = round(int(value) / 1e9, 2)
    else:
        start, end = map(float, value.split())
        entry["steps"].append({"step": part, "seconds": round(end - start, 1)})
for number, entry in result["commands"].items():
    print(f"README command {number}: .venv {entry.get('venv_gb')} GB")
    for step in entry["steps"]:
        print(f"  {step['seconds']:8.1f} s  {step['step']}")
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
PY
[ "$status" -eq 0 ] || exit "$status"
[ "$install_only" = 1 ] && exit 0
python3 - "$scratch/command0.log" "$SYMBOL_TUNING_CACHE" <<'PY'
import json, pathlib, re, sys
log, cache = pathlib.Path(sys.argv[1]).read_text(), sys.argv[2]
# The first run extracts the packaged BIG-bench tasks once and says where.
assert re.search(rf"BIG-bench: extracted \d+ task.json files .* into {re.escape(cache)}/bigbench/",
                 log), "the demo did not say where it put the BIG-bench tasks"
out = pathlib.Path("runs/demo")
for name in ("report.md", "settings.png", "tasks.png", "metrics.json",
             "eval_before/results.json", "eval_after/results.json", "run/metrics.jsonl"):
    path = out / name
    assert path.is_file() and path.stat().st_size > 0, f"missing or empty: {path}"
assert (out / "settings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
metrics = json.loads((out / "metrics.json").read_text())
assert metrics["train_last"]["step"] == metrics["steps"], metrics["train_last"]
assert list((out / "run" / "train").glob("events.out.tfevents.*")), "no TensorBoard events"
assert list((out / "run").glob("checkpoint_*")), "no checkpoint"
report = (out / "report.md").read_text()
assert "| **average** |" in report and "before" in report
print("fresh clone: README commands ran; demo outputs are complete and well formed")
PY
