"""Decoder-only rank-classification speed: scoring from the prompt's KV cache vs the naive
recipe (prompt + option as one sequence, a full pass per option), same prompts.

Run: python benchmarks/decoder_eval_scoring.py [--configs llama-tiny] [--max_examples 2]
Prints and writes benchmarks/results/decoder_eval_scoring.json. Prompts as in
eval_scoring.py (held-out BIG-bench suite, fitted to 2048 tokens, seed 0), random weights:
  - fast:  decoder_scoring.DecoderScorer.rank: each prompt prefilled once into the KV
           cache, all options scored in one chunked pass over the repeated cache;
  - naive: DecoderScorer.rank_naive: a full forward pass of prompt + option per option,
           every row padded to 2048 + the option bucket;
  - naive_bucketed: the naive recipe with the fast path's length buckets.
Every variant is compiled on a warm-up pass first (the timed pass is checked to compile
nothing); figures are steady-state prompts per second, and the scores are compared.
"""
import common  # pylint: disable=unused-import  (sets the environment first)
import eval_scoring


def _compiled() -> int:
  from symbol_tuning.evaluation import decoder_scoring  # pylint: disable=g-import-not-at-top

  return sum(f._cache_size() for f in (decoder_scoring._prefill,  # pylint: disable=protected-access
                                       decoder_scoring._score_from_cache,
                                       decoder_scoring._forward_score))


if __name__ == "__main__":
  # The naive rows are padded to --input_length + the option bucket (no single padded length).
  eval_scoring.main("decoder_eval_scoring", __doc__, configs="llama-tiny", max_examples=2,
                    compiled=_compiled, naive_pads_to_input_length=False)
