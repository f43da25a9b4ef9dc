"""`symbol-tuning demo` end to end on a short budget (2 steps, 2 queries per task and
setting): every output the README promises, then what a second invocation reuses, continues
or refuses. benchmarks/fresh_clone.sh runs the full-size demo from a fresh clone."""
import json

import pytest

import readme_support
from symbol_tuning import cli

# Short prompts too: a tiny model's evaluations spend most of their time running 2,048-token
# prompts, and the code path is the same at any budget.
SHORT = ["--max_examples", "2", "--input_length", "1024", "--no_progress"]


pytestmark = pytest.mark.usefixtures("clean_gin")


def demo(out, *extra):
  return cli.main(["demo", "--out", str(out), *SHORT, *extra])


def test_demo_writes_everything_and_resumes(tmp_path, monkeypatch, capsys, bigbench_dir):
  """The Quick start's demo command as README writes it (short settings appended), then
  README's Evaluation block on what it wrote, then a second and a third invocation."""
  monkeypatch.chdir(tmp_path)
  (install_and_demo,) = readme_support.block("Quick start", 0).commands
  readme_demo = readme_support.cli_argv(install_and_demo.split(" && ")[-1])
  assert readme_demo == ["demo", "--out", "runs/demo"]
  out = tmp_path / "runs" / "demo"
  assert cli.main(readme_demo + SHORT + ["--steps", "2"]) == 0
  err = capsys.readouterr().err
  for n, stage in enumerate(("data", "init", "before", "train", "after", "report"), 1):
    assert f"[demo {n}/6 {stage}]" in err
  for name in ("report.md", "settings.png", "tasks.png", "metrics.json", "data.json",
               "eval_before/results.json", "eval_after/results.json", "run/metrics.jsonl",
               "compare/compare.md"):
    assert (out / name).stat().st_size > 0, name
  assert (out / "settings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert list((out / "run" / "train").glob("events.out.tfevents.*"))
  assert [p.name for p in (out / "run").glob("checkpoint_*")] == ["checkpoint_2"]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["train_last"]["step"] == 2 and metrics["steps"] == 2
  assert metrics["input_length"] == metrics["before"]["input_length"] == 1024
  before, after = metrics["before"], metrics["after"]
  assert before["label"] == "before" and after["label"] == "after"
  # The identical prompts before and after: the same tasks, settings and query counts.
  assert before["num_examples"] == after["num_examples"] > 0
  assert before["tasks"].keys() == after["tasks"].keys() and len(before["tasks"]) == 11
  report = (out / "report.md").read_text()
  assert "| **average** |" in report and "What this can and cannot show" in report
  assert "One invocation of the command." in report
  stamp = (out / "eval_before" / "results.json").stat().st_mtime_ns


  # Again with more steps: training continues from step 2, the starting model's evaluation
  # is reused, the tuned model's is redone, and the timings add up over both invocations.
  assert demo("runs/demo", "--steps", "3") == 0
  capsys.readouterr()
  assert (out / "eval_before" / "results.json").stat().st_mtime_ns == stamp
  assert json.loads((out / "eval_after" / "demo_stage.json").read_text())["step"] == 3
  steps = [json.loads(line)["step"] for line in
           (out / "run" / "metrics.jsonl").read_text().splitlines() if line.startswith('{"step"')]
  assert steps[-1] == 3 and steps.count(2) == 1  # step 2 was not trained twice
  timings = json.loads((out / "timings.json").read_text())
  assert timings["invocations"] == 2
  assert "Summed over 2 invocations" in (out / "report.md").read_text()

  # Another starting model in the same --out is refused, naming what changed.
  assert demo(out, "--steps", "3", "--seed", "1") == 2
  assert "--seed 0 -> 1" in capsys.readouterr().err

  # README's Evaluation block on the demo's checkpoints (one query per task and setting).
  evaluation = readme_support.block("Evaluation", 0).commands
  assert [c.split()[1] for c in evaluation] == ["eval", "eval", "compare"]
  for command in evaluation:
    extra = (["--max_examples", "1", "--input_length", "1024", "--no_progress"]
             if command.split()[1] == "eval" else [])
    assert cli.main(readme_support.cli_argv(command) + extra) == 0, command
  evaluated = [json.loads((tmp_path / "runs" / name / "results.json").read_text())
               for name in ("eval_before", "eval_after")]
  assert evaluated[0]["num_examples"] == evaluated[1]["num_examples"] > 0
  assert (tmp_path / "runs" / "compare" / "compare.md").is_file()


@pytest.mark.parametrize("argv,message", [
    (["demo", "--steps", "0"], "argument --steps: 0 must be at least 1"),
    (["demo", "--max_examples", "x"], "argument --max_examples: 'x' is not an integer"),
    (["eval", "--checkpoint", "c", "--suite", "bigbench", "--max_examples", "-2"],
     "argument --max_examples: -2 must be at least 1"),
])
def test_counts_must_be_positive(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_demo_and_compare_take_a_decoder_only_checkpoint(tmp_path, capsys, bigbench_dir):
  """--init with a decoder-only checkpoint (a random llama-tiny saved as ours): evaluated
  before from the KV cache, trained, evaluated after, compared (compare.md and plots)."""
  from symbol_tuning.checkpoints import native  # pylint: disable=import-outside-toplevel
  from symbol_tuning.models import registry as family  # pylint: disable=import-outside-toplevel

  config = family.get_config("llama-tiny", vocab_size=8064, dropout_rate=0.0)
  init = tmp_path / "llama_init"
  native.save_native(config, family.init_params(config, 0), str(init))
  out = tmp_path / "demo"
  assert demo(out, "--steps", "1", "--init", str(init)) == 0, (
      capsys.readouterr().err)
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["before"]["num_examples"] == metrics["after"]["num_examples"] > 0
  _, params = native.load_native(str(out / "run"))
  assert "decoder" in params and "encoder" not in params  # trained as a decoder-only model
  compare = (out / "compare" / "compare.md").read_text()
  assert "before" in compare and "after" in compare
  assert (out / "settings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
