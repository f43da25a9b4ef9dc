"""Packing efficiency of training batches: how full the packed rows are.

Run: python benchmarks/packing.py [--rows 512]
For symbol_tuning_bigbench (and symbol_tuning when its HF data is reachable, e.g. through
SYMBOL_TUNING_DATA_DIR) at 2048/512, packs rows as training does (best-fit packing,
symbol_tuning.data.packing) and, for comparison, with seqio's greedy EncDecFeatureConverter
(what t5x does by default). Reports the share of non-padding input and target tokens,
prompts per row, and the largest number of target tokens any row needed, i.e. how far
the 512-token target budget could be cut without losing a single example. Also repeats
the packing with that shorter target length to show the rows stay as full.
Prints and writes benchmarks/results/packing.json.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)


def converter(packer: str):
  import seqio  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import packing  # pylint: disable=g-import-not-at-top

  if packer == "best_fit":
    return packing.BestFitEncDecFeatureConverter(pack=True)
  return seqio.EncDecFeatureConverter(pack=True)


def pack_stats(name: str, lengths: dict, rows: int, packer: str, seed: int = 0) -> dict:
  inputs = targets = prompts = 0
  max_targets, per_row = 0, []
  for ex in common.packed_rows(name, lengths, rows, converter(packer), seed):
    inputs += int((ex["encoder_input_tokens"] > 0).sum())
    used = int((ex["decoder_target_tokens"] > 0).sum())
    targets += used
    max_targets = max(max_targets, used)
    n = int(ex["encoder_segment_ids"].max())
    prompts += n
    per_row.append(n)
  return {"mixture": name, "packer": packer, "lengths": lengths, "rows": rows,
          "input_fill": inputs / (rows * lengths["inputs"]),
          "target_fill": targets / (rows * lengths["targets"]),
          "prompts_per_row": prompts / rows, "max_target_tokens_in_a_row": max_targets,
          "prompts_per_row_p10_p90": common.p10_p90(per_row)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=512)
  args = parser.parse_args()
  common.setup_bigbench()
  from symbol_tuning.data.sources import DataSourceError  # pylint: disable=g-import-not-at-top

  results = []
  for name in ("symbol_tuning_bigbench", "symbol_tuning"):
    for packer in ("best_fit", "seqio_greedy"):
      try:
        full = pack_stats(name, {"inputs": 2048, "targets": 512}, args.rows, packer)
      except DataSourceError as e:
        print(f"{name}: unavailable here ({str(e).splitlines()[0][:160]})")
        results.append({"mixture": name, "unavailable": str(e)})
        break
      print(f"{name}, {packer} at 2048/512: inputs {full['input_fill']:.1%} full, targets "
            f"{full['target_fill']:.1%} full, {full['prompts_per_row']:.2f} prompts per row; "
            f"no row needed more than {full['max_target_tokens_in_a_row']} target tokens")
      if packer == "best_fit":
        cut = common.round_up(full["max_target_tokens_in_a_row"], 16)
        short = pack_stats(name, {"inputs": 2048, "targets": cut}, args.rows, packer)
        full["suggested_target_length"] = cut
        full["with_suggested_target_length"] = short
        print(f"{name}, {packer} at 2048/{cut}: inputs {short['input_fill']:.1%} full, "
              f"targets {short['target_fill']:.1%} full, {short['prompts_per_row']:.2f} "
              f"prompts per row")
      results.append(full)
  common.write("packing", {"results": results})


if __name__ == "__main__":
  main()
