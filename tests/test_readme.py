"""README.md cannot drift from the code: every ```bash block names what runs it, and the
cheap ones run here as written, from a fresh folder, with only tiny settings appended."""
import json
import pathlib

import pytest

import readme_support
from symbol_tuning import cli

REPO = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("clean_gin")


def test_every_bash_block_names_what_runs_it():
  blocks = readme_support.blocks()
  assert len(blocks) >= 9, [(b.section, b.index) for b in blocks]
  problems = []
  for b in blocks:
    where = f"README.md, '## {b.section}', bash block {b.index}"
    if not b.runners:
      problems.append(f"{where}: no '<sub>Run by `FILE`.</sub>' line after it")
    for runner in b.runners:
      path = REPO / runner
      if not path.is_file():
        problems.append(f"{where}: {runner} does not exist")
        continue
      text = path.read_text(encoding="utf-8")
      if runner == "benchmarks/fresh_clone.sh":  # it runs the Quick start's first two blocks
        runs = b.section == "Quick start" and b.index < 2 and '"## Quick start"' in text
      else:
        runs = f'("{b.section}", {b.index}' in text  # block("Training", 0) and the like
      if not runs:
        problems.append(f"{where}: {runner} does not run it")
  assert not problems, "\n".join(problems)


def test_fresh_clone_reads_the_two_quick_start_commands():
  commands = [" ".join(b.commands) for b in readme_support.blocks()
              if b.section == "Quick start"][:2]
  assert commands[0].endswith("pip install -e . && symbol-tuning demo --out runs/demo")
  assert "../shared" not in commands[0]  # it works on any machine, not only in a workspace
  assert commands[1].endswith("pip install -e '.[test]' && python -m pytest -q tests")


def run(command: str, *extra: str) -> None:
  assert cli.main(readme_support.cli_argv(command) + list(extra)) == 0, command


def test_training_block(tmp_path, monkeypatch, bigbench_dir):
  del bigbench_dir
  monkeypatch.chdir(tmp_path)
  (command,) = readme_support.block("Training", 0).commands
  run(command, "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--no_progress")
  assert (tmp_path / "runs" / "tiny" / "checkpoint_2").is_dir()


def test_decoder_only_block(tmp_path, monkeypatch, bigbench_dir):
  """Convert an HF directory both ways, train the tiny decoder-only model, evaluate it; the
  README's `path/to/Qwen2-0.5B` is a tiny llama-family HF directory made at that path."""
  del bigbench_dir
  from symbol_tuning.checkpoints import save_hf  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models import registry  # pylint: disable=import-outside-toplevel

  monkeypatch.chdir(tmp_path)
  config = registry.get_config("llama-tiny", vocab_size=256)
  save_hf(config, registry.init_params(config, 0), "path/to/Qwen2-0.5B")
  tiny = {"convert": [], "train": ["--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--no_progress"],
          "eval": ["--max_examples", "1", "--settings", "symbols", "--no_progress"]}
  commands = readme_support.block("Decoder-only models", 0).commands
  assert [c.split()[1] for c in commands] == ["convert", "convert", "train", "eval"]
  for command in commands:
    run(command, *tiny[command.split()[1]])
  assert (tmp_path / "runs" / "qwen_hf" / "config.json").is_file()
  results = json.loads((tmp_path / "runs" / "llama_eval" / "results.json").read_text())
  assert results["num_examples"] > 0
