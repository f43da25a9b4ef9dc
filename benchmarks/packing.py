"""Packing efficiency of training batches: how full the packed rows are.

Run: python benchmarks/packing.py [--family t5|decoder] [--rows 512]
Packs training rows as training does (the family's best-fit feature converter over
symbol_tuning.data.packing) and, for comparison, with seqio's greedy converter the family's
extends (EncDecFeatureConverter for T5, what t5x does by default; PrefixLMFeatureConverter
for decoder-only, rows of inputs + targets length), for symbol_tuning_bigbench (and
symbol_tuning when its HF data is reachable, e.g. through SYMBOL_TUNING_DATA_DIR) at
2048/512. Reports the share of row positions that hold a token per stack (encoder_fill,
decoder_fill), the share of loss (answer) tokens, prompts per row, and the largest
targets budget any row (T5) or example (one-sequence families) needed, i.e. how far the
512-token target length could be cut without losing a single example; then repeats the
packing with that shorter target length to show the rows stay as full.
Prints and writes benchmarks/results/packing.json (T5) or <family>_packing.json.
"""
import argparse

import common  # pylint: disable=unused-import  (sets the environment first)


def pack_stats(family, name: str, lengths: dict, rows: int, best_fit: bool,
               seed: int = 0) -> dict:
  used, prompts, answer, per_row = {}, 0, 0, []
  max_row_targets = max_answer = 0
  width = {}
  stacks = [f for f in family.model_features if f.endswith("_segment_ids")]
  converter = family.feature_converter(pack=True, best_fit=best_fit)
  for ex in common.packed_rows(name, lengths, rows, converter, seed):
    for feature in stacks:
      stack = feature.split("_")[0]
      used[stack] = used.get(stack, 0) + int((ex[feature] > 0).sum())
      width[stack] = ex[feature].shape[-1]
    weights, segments = ex["decoder_loss_weights"], ex["decoder_segment_ids"]
    answer += int(weights.sum())
    max_row_targets = max(max_row_targets, int(weights.sum()))
    n = int(ex[stacks[0]].max())
    for s in range(1, n + 1):
      max_answer = max(max_answer, int(weights[segments == s].sum()))
    prompts += n
    per_row.append(n)
  return {"mixture": name, "packer": "best_fit" if best_fit else "seqio_greedy",
          "lengths": lengths, "rows": rows, "row_lengths": width,
          **{f"{stack}_fill": used[stack] / (rows * width[stack]) for stack in used},
          "answer_share": answer / (rows * width["decoder"]),
          "prompts_per_row": prompts / rows, "max_target_tokens_in_a_row": max_row_targets,
          "max_answer_tokens": max_answer, "prompts_per_row_p10_p90": common.p10_p90(per_row)}


def describe(r: dict) -> str:
  fills = ", ".join(f"{k.removesuffix('_fill')} {v:.1%} full" for k, v in r.items()
                    if k.endswith("_fill"))
  return (f"{r['mixture']}, {r['packer']} at {r['lengths']['inputs']}/{r['lengths']['targets']}"
          f": {fills}, {r['prompts_per_row']:.2f} prompts per row")


def main() -> None:
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_family_flag(parser)
  parser.add_argument("--rows", type=int, default=512)
  args = parser.parse_args()
  family = registry.get_family(args.family)
  common.setup_bigbench()
  from symbol_tuning.data.sources import DataSourceError  # pylint: disable=g-import-not-at-top

  results = []
  for name in ("symbol_tuning_bigbench", "symbol_tuning"):
    for best_fit in (True, False):
      try:
        full = pack_stats(family, name, {"inputs": 2048, "targets": 512}, args.rows, best_fit)
      except DataSourceError as e:
        print(f"{name}: unavailable here ({str(e).splitlines()[0][:160]})")
        results.append({"mixture": name, "unavailable": str(e)})
        break
      # The targets length bounds one example's answer when it shares the row with the
      # prompt, else a row's packed targets.
      needed = full["max_answer_tokens" if family.answer_in_sequence
                    else "max_target_tokens_in_a_row"]
      print(f"{describe(full)}; no {'example' if family.answer_in_sequence else 'row'} "
            f"needed more than {needed} target tokens")
      if best_fit:
        cut = common.round_up(needed, 16)
        short = pack_stats(family, name, {"inputs": 2048, "targets": cut}, args.rows, best_fit)
        full["suggested_target_length"] = cut
        full["with_suggested_target_length"] = short
        print(describe(short))
      results.append(full)
  common.write(common.result_name("packing", family.name),
               {"family": family.name, "results": results})


if __name__ == "__main__":
  main()
