"""The embedded trainer: t5x-style finetuning of `symbol_tuning.model` on seqio mixtures."""
