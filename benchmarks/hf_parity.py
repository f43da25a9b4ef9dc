"""Parity of our decoder-only network with transformers, per HF family: README's table.

Run: python benchmarks/hf_parity.py [--table]   (needs torch and transformers; --table:
print README's markdown table from the stored JSON, measuring nothing)
Prints and writes benchmarks/results/hf_parity.json. For each model_type, the tests' own
tiny random transformers model (tests/decoder_parity.py, the one
tests/test_checkpoints.py checks to 1e-4), float32, 2 rows of 24 tokens:
  - short: max |our logits - transformers'| at positions 0..23;
  - long: the same at positions 20,000..20,023 (through position_ids);
  - without_window (windowed families only): the short figure with our windows removed,
    which shows the window shapes these logits (positions 5.. lie beyond it).
"""
import argparse
import json
import pathlib
import sys
import tempfile

import common  # noqa: F401  (environment first)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import decoder_parity  # noqa: E402  pylint: disable=g-import-not-at-top

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top


def markdown_table() -> str:
  """README's parity table, from benchmarks/results/hf_parity.json."""
  data = json.loads((common.RESULTS_DIR / "hf_parity.json").read_text())
  end = data["long_start"] + data["length"] - 1
  lines = [f"| HF model_type | positions 0-{data['length'] - 1} | positions "
           f"{data['long_start']:,}-{end:,} | windows removed |", "|---|---|---|---|"]
  for family, row in data["max_abs_difference"].items():
    removed = f"{row['without_window']:.1f}" if "without_window" in row else "(no window)"
    lines.append(f"| `{family}` | {row['short']:.1e} | {row['long']:.1e} | {removed} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--table", action="store_true", help="print the stored results' table")
  if parser.parse_args().table:
    print(markdown_table())
    return
  from symbol_tuning.checkpoints import load_hf  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    models, tokens = decoder_parity.make_models(tmp)
    rows = {}
    for family, model in models.items():
      row = decoder_parity.max_differences(model, tokens)
      config, params = load_hf(str(model[0]))
      if config.sliding_window is not None:
        unwindowed = config.replace(sliding_window=None, layer_types=())
        ours = decoder_parity.our_logits(unwindowed, params, tokens)
        row["without_window"] = float(np.abs(ours - model[1]["short"]).max())
      rows[family] = row
      print(f"{family:12s} short {row['short']:.2e}  long {row['long']:.2e}"
            + (f"  without_window {row['without_window']:.2e}" if "without_window" in row
               else ""))
  common.write("hf_parity", {"dtype": "float32", "length": decoder_parity.LENGTH,
                             "long_start": decoder_parity.LONG_START,
                             "max_abs_difference": rows})
  print(markdown_table())


if __name__ == "__main__":
  main()
