"""Subcommands of the `symbol-tuning` CLI (see symbol_tuning/cli.py)."""
