"""Packing efficiency of decoder-only training rows (prompt + answer in one sequence).

Run: python benchmarks/decoder_packing.py [--rows 128]
Packs symbol_tuning_bigbench with symbol_tuning.data.decoder_packing (best-fit, one sequence
per example, seqio PrefixLM features) and, for comparison, with seqio's greedy
PrefixLMFeatureConverter. Row length = inputs + targets lengths (2048 + 512, and 2048 + the
largest answer any row needed, rounded up to 16). Reports the share of row positions that
hold a token (segment id > 0), the share of answer tokens (loss weight 1) and prompts per row.
Prints and writes benchmarks/results/decoder_packing.json.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)


def converter(packer: str):
  import seqio  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import decoder_packing  # pylint: disable=g-import-not-at-top

  if packer == "best_fit":
    return decoder_packing.BestFitPrefixLMFeatureConverter(pack=True)
  return seqio.PrefixLMFeatureConverter(pack=True)


def pack_stats(name: str, lengths: dict, rows: int, packer: str, seed: int = 0) -> dict:
  used = answer = prompts = max_answer = 0
  per_row = []
  for ex in common.packed_rows(name, lengths, rows, converter(packer), seed):
    used += int((ex["decoder_segment_ids"] > 0).sum())
    weights = ex["decoder_loss_weights"]
    answer += int(weights.sum())
    n = int(ex["decoder_segment_ids"].max())
    for s in range(1, n + 1):
      max_answer = max(max_answer, int(weights[ex["decoder_segment_ids"] == s].sum()))
    prompts += n
    per_row.append(n)
  length = lengths["inputs"] + lengths["targets"]
  return {"mixture": name, "packer": packer, "lengths": lengths, "row_length": length,
          "rows": rows, "fill": used / (rows * length), "answer_share": answer / (rows * length),
          "prompts_per_row": prompts / rows, "max_answer_tokens": max_answer,
          "prompts_per_row_p10_p90": common.p10_p90(per_row)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=128)
  args = parser.parse_args()
  common.setup_bigbench()
  name = "symbol_tuning_bigbench"
  results = []
  for packer in ("best_fit", "seqio_greedy"):
    full = pack_stats(name, {"inputs": 2048, "targets": 512}, args.rows, packer)
    print(f"{name}, {packer}, rows of {full['row_length']}: {full['fill']:.1%} of positions "
          f"used, {full['prompts_per_row']:.2f} prompts per row")
    results.append(full)
    if packer == "best_fit":
      cut = common.round_up(full["max_answer_tokens"], 16)
      short = pack_stats(name, {"inputs": 2048, "targets": cut}, args.rows, packer)
      print(f"{name}, {packer}, rows of {short['row_length']}: {short['fill']:.1%} of "
            f"positions used, {short['prompts_per_row']:.2f} prompts per row")
      results.append(short)
  common.write("decoder_packing", {"results": results})


if __name__ == "__main__":
  main()
