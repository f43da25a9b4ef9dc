#!/usr/bin/env bash
# Fresh-clone check: clone this repo into a temporary directory beside it (so ../shared is
# found as in a normal checkout), run README.md's two Quick start commands exactly as
# written, and check that the demo's outputs exist and are well formed.
#   bash benchmarks/fresh_clone.sh        (about 25 minutes on 2 cores: 2 installs, demo, tests)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "$(dirname "$repo")/fresh-clone.XXXXXX")"  # a sibling: ../shared resolves
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work"
cd "$work"
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
for i in 0 1; do
  echo "== README command $((i + 1)): ${commands[$i]}"
  bash -c "${commands[$i]}"
done
python3 - <<'PY'
import json, pathlib
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
