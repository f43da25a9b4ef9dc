"""symbol-tuning: symbol-tune seq2seq LMs and measure their in-context learning.

Wei et al. 2023, "Symbol tuning improves in-context learning in language models".
Importing this package does no work; `import symbol_tuning.data.tasks` registers the seqio
tasks and mixtures.
"""

__version__ = "0.1.0"
