"""`symbol-tuning export` writes the same JSONL bytes for a seed as it always has.

tests/data/export_golden.json was written by the per-prompt export of commit be9b585
(before #25 batched it): `python tests/test_export_golden.py` at that commit, with the
local vocabulary and ../shared/data/bigbench. Each case keeps the digest of the whole file,
a short digest of every line (so a failure names the first line that differs) and its
first two lines in full; the full files are 0.2-1.9 MB.
"""
import hashlib
import json
import pathlib
import sys

import pytest

GOLDEN = pathlib.Path(__file__).resolve().parent / "data" / "export_golden.json"
# (name, --num, --seed, --input_length): a mixture, the same mixture at a budget where one
# task runs out of prompts that fit (the file ends early, after 195 lines), and one task.
CASES = (
    ("symbol_tuning_bigbench", 600, 7, 1024),
    ("symbol_tuning_bigbench", 1000, 7, 512),
    ("symbol_tuning.bigbench.navigate", 200, 3, 256),
)


def _argv(case, out) -> list[str]:
  name, num, seed, input_length = case
  return ["export", name, "--num", str(num), "--seed", str(seed),
          "--input_length", str(input_length), "--out", str(out)]


def summary(data: bytes) -> dict:
  lines = data.decode("utf-8").splitlines(keepends=True)
  return {"sha256": hashlib.sha256(data).hexdigest(), "num_lines": len(lines),
          "line_sha256": [hashlib.sha256(line.encode()).hexdigest()[:16] for line in lines],
          "first_lines": lines[:2]}


def _export(case, tmp_path, capsys) -> bytes:
  from symbol_tuning import cli  # pylint: disable=import-outside-toplevel

  out = tmp_path / "out.jsonl"
  assert cli.main(_argv(case, out)) == 0
  capsys.readouterr()
  return out.read_bytes()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}")
def test_export_bytes_unchanged(case, tmp_path, capsys, bigbench_dir):
  del bigbench_dir
  golden = {tuple(c["case"]): c for c in json.loads(GOLDEN.read_text())["cases"]}[case]
  got = summary(_export(case, tmp_path, capsys))
  if got["sha256"] != golden["sha256"]:
    first = next((i for i, (a, b) in enumerate(zip(got["line_sha256"], golden["line_sha256"]))
                  if a != b), min(got["num_lines"], golden["num_lines"]))
    shown = got["first_lines"] if first < 2 else []
    pytest.fail(f"{case}: {got['num_lines']} lines (golden {golden['num_lines']}); first "
                f"differing line {first}; {shown[first] if shown else ''}")
  assert got["first_lines"] == golden["first_lines"]


if __name__ == "__main__":
  # Regenerates the golden file: only for a deliberate change of the exported prompts.
  import os  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  import conftest  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  from symbol_tuning import cli  # pylint: disable=import-outside-toplevel

  cases = []
  with tempfile.TemporaryDirectory() as tmp:
    for case in CASES:
      out = os.path.join(tmp, "out.jsonl")
      assert cli.main(_argv(case, out)) == 0
      cases.append({"case": list(case), **summary(pathlib.Path(out).read_bytes())})
  GOLDEN.write_text(json.dumps({"cases": cases}, indent=0, ensure_ascii=False) + "\n")
  print(f"wrote {GOLDEN}")
