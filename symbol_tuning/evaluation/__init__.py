"""In-context-learning evaluation (SPEC sections 5 and 6).

  suites.py       what to evaluate: the paper's 11 held-out datasets, the 11 held-out
                  BIG-bench tasks, List Functions, Simple Turing Concepts -> prompts
  scoring.py      rank classification and greedy decoding for every model family, over the
                  family's inference operations (T5: one encoder pass per prompt;
                  decoder-only: one prefill into the KV cache)
  report.py       per-example JSONL, per-task/per-setting JSON, Table-1 Markdown, compare
  algorithmic.py  List Functions / Turing Concepts prompts and the evaluation-only seqio
                  tasks (algorithmic tasks, rank-classification twins of the eval tasks)
The CLI is symbol_tuning/commands/evaluate.py; seqio metric functions are in
symbol_tuning/data/metrics.py. Kept import-light: symbol_tuning.data.tasks imports algorithmic.py.
"""
