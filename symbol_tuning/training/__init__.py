"""The embedded trainer: t5x-style finetuning of any model family (symbol_tuning.models)
on seqio mixtures; the family's interface gives the forward pass, features and converter."""
