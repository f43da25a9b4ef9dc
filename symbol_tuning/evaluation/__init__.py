"""In-context-learning evaluation (SPEC sections 5 and 6).

  suites.py       what to evaluate: the paper's 11 held-out datasets, the 11 held-out
                  BIG-bench tasks, List Functions, Simple Turing Concepts -> prompts
  scoring.py      rank classification and greedy decoding for every model family, over the
                  family's inference operations (T5: one encoder pass per prompt;
                  decoder-only: one prefill into the KV cache)
  report.py       per-example JSONL, per-task/per-setting JSON, Table-1 Markdown, compare
The CLI is symbol_tuning/commands/evaluate.py. The prompts of List Functions / Turing
Concepts and the evaluation-only seqio tasks live with the other registrations
(symbol_tuning/data/algorithmic.py); seqio metric functions in symbol_tuning/data/metrics.py.
"""
