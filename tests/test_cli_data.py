import io
import json
import os
import subprocess
import sys

import pytest
import seqio

from symbol_tuning import cli
from symbol_tuning.commands import data


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_list_json_counts_tasks_and_mixtures(capsys, bigbench_dir):
  code, out, _ = run(capsys, "list", "--json", "--filter", "bigbench")
  assert code == 0
  rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
  navigate = rows["symbol_tuning.bigbench.navigate"]
  assert navigate["num_examples"] == 800 and navigate["split"] == "train"
  products = rows["symbol_tuning.bigbench.multiemo_products_sentence_en"]
  assert sum(products["filtered"].values()) >= 1  # a whitespace-only input, counted
  mixture = rows["symbol_tuning_bigbench"]
  assert mixture["num_tasks"] == 18 and sum(mixture["rates"].values()) == pytest.approx(1, abs=1e-4)
  assert rows["symbol_tuning_eval_bigbench_symbols"]["num_tasks"] == 11


def test_list_reports_unavailable_hf_data_instead_of_failing(capsys, monkeypatch):
  monkeypatch.delenv("SYMBOL_TUNING_DATA_DIR", raising=False)
  code, out, _ = run(capsys, "list", "--filter", "tune.rte")
  assert code == 0 and "unavailable" in out and "SYMBOL_TUNING_DATA_DIR" in out


def test_inspect_json_records(capsys, bigbench_dir):
  code, out, _ = run(capsys, "inspect", "symbol_tuning_bigbench", "--num", "4", "--json",
                     "--seed", "1")
  assert code == 0
  recs = [json.loads(line) for line in out.splitlines()]
  assert len(recs) == 4
  for rec in recs:
    for key in ("task", "inputs", "targets", "template", "k", "symbols", "num_input_tokens"):
      assert key in rec
    assert rec["targets"] == rec["symbols"][list(rec["symbols"])[rec["gold"]]]
    assert rec["num_input_tokens"] <= 2048
  code, again, _ = run(capsys, "inspect", "symbol_tuning_bigbench", "--num", "4", "--json",
                       "--seed", "1")
  assert again == out


def test_inspect_human_readable(capsys, bigbench_dir):
  code, out, err = run(capsys, "inspect", "symbol_tuning.bigbench.navigate", "--num", "1")
  assert code == 0 and out.startswith("=== symbol_tuning.bigbench.navigate  template")
  assert "--- target:" in out and "labels: True -> " in out
  assert err == ""  # every prompt fitted: no "skipped ...: 0" note


def test_export_writes_jsonl_as_inspect_prints_it(capsys, tmp_path, bigbench_dir):
  out_file = tmp_path / "prompts.jsonl"
  code, _, err = run(capsys, "export", "symbol_tuning.bigbench.hyperbaton", "--num", "7",
                     "--out", str(out_file))
  assert code == 0
  assert err == f"wrote 7 prompts of symbol_tuning.bigbench.hyperbaton (train) to {out_file}\n"
  _, out, _ = run(capsys, "inspect", "symbol_tuning.bigbench.hyperbaton", "--num", "7",
                  "--json")
  assert out == out_file.read_text()


def test_export_shows_a_progress_bar_on_a_terminal(capsys, tmp_path, monkeypatch, bigbench_dir):
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  out_file = tmp_path / "prompts.jsonl"
  assert cli.main(["export", "symbol_tuning.bigbench.navigate", "--num", "600", "--out",
                   str(out_file)]) == 0
  shown = terminal.getvalue()
  assert "export symbol_tuning.bigbench.navigate" in shown and "/600" in shown
  assert shown.rstrip().endswith(f"wrote 600 prompts of symbol_tuning.bigbench.navigate "
                                 f"(train) to {out_file}")
  assert capsys.readouterr().out == ""


def test_skipped_note_lists_only_tasks_with_skipped_prompts(capsys, tmp_path, bigbench_dir):
  # At 512 tokens some BIG-bench prompts cannot fit even with one exemplar per class.
  code, _, err = run(capsys, "export", "symbol_tuning_bigbench", "--num", "100",
                     "--input_length", "512", "--out", str(tmp_path / "p.jsonl"))
  assert code == 0
  (note,) = [line for line in err.splitlines() if line.startswith("skipped")]
  counts = dict(item.rsplit(": ", 1) for item in note.split("class): ")[1].split(", "))
  assert counts and all(int(n) > 0 for n in counts.values()), note
  tasks = {t.name for t in seqio.get_mixture_or_task("symbol_tuning_bigbench").tasks}
  assert set(counts) <= tasks


def test_stats_spread_and_no_query_cut(capsys, bigbench_dir):
  code, out, _ = run(capsys, "stats", "symbol_tuning_bigbench", "--num", "300", "--json")
  assert code == 0
  stats = json.loads(out)
  assert stats["num_prompts"] == 300 and stats["num_query_cut"] == 0
  assert set(stats["k_drawn"]) <= {str(k) for k in range(2, 11)}
  assert set(stats["symbol_kind"]) == {"integer", "letters", "word"}


def test_unknown_name_is_a_one_line_error(capsys):
  code, _, err = run(capsys, "inspect", "symbol_tuning_bigbenh")
  assert code == 2
  assert len(err.strip().splitlines()) == 1
  assert err.startswith("symbol-tuning inspect: error: no task or mixture named "
                        "'symbol_tuning_bigbenh'; did you mean symbol_tuning_bigbench, ")


def test_unknown_split(capsys, bigbench_dir):
  code, _, err = run(capsys, "inspect", "symbol_tuning.eval_bigbench.anachronisms.labels")
  assert code == 2 and "has no split 'train'; it has ['validation']" in err


def test_console_script_runs(bigbench_dir):
  env = dict(os.environ)
  proc = subprocess.run([sys.executable, "-m", "symbol_tuning.cli", "--vocab", "local",
                         "inspect", "symbol_tuning.bigbench.navigate", "--num", "1", "--json"],
                        capture_output=True, text=True, env=env, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout)["task"] == "symbol_tuning.bigbench.navigate"


@pytest.mark.parametrize("command", [["inspect", "symbol_tuning_bigbench", "--num", "1"],
                                     ["eval", "--checkpoint", "random:tiny", "--suite",
                                      "bigbench", "--max_examples", "1"]])
def test_default_vocabulary_without_gcs_is_one_line_with_what_to_do(capsys, monkeypatch,
                                                                    bigbench_dir, command):
  """Flan-T5's vocabulary lives on GCS: where GCS cannot be reached the command stops at
  once with what to pass, not after TensorFlow's ~80 s of retries with a traceback."""
  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel

  reached = []
  monkeypatch.setattr(vocab, "_reachable", lambda host, *a, **k: reached.append(host))
  monkeypatch.delenv("SYMBOL_TUNING_VOCAB")
  vocab.set_vocabulary(None)
  try:
    code, _, err = run(capsys, *command)
  finally:
    vocab.set_vocabulary(None)
  assert reached == [vocab.GCS_HOST], err
  assert code == 2 and len(err.strip().splitlines()) == 1, err
  assert "cannot be reached" in err and "--vocab local" in err


@pytest.mark.parametrize("symbols", [{"True": "ab", "False": "cd"},
                                     {"True": "café", "False": "naïve"},  # escaped in labels_json
                                     {"True": "\\u00e9", "False": 'a"b'}])
def test_export_lines_equal_json_dumps_of_the_records(symbols):
  options = list(symbols.values())
  columns = {
      "task": [b"symbol_tuning.x"], "inputs_pretokenized": ['Q: "ok"\\ \n\t\x01 é 😀'.encode()],
      "targets_pretokenized": [options[0].encode()], "template": [3], "k": [2], "k_drawn": [2],
      "num_dropped": [0], "gold": [0], "query_index": [17], "num_input_tokens": [40],
      "num_target_tokens": [2],
      # as prompt_builder writes it: json.dumps with its default ASCII escapes
      "labels_json": [json.dumps({"symbols": symbols, "options": options}).encode()]}
  assert data._json_line(columns, 0) == (
      json.dumps(data._record(columns, 0), ensure_ascii=False) + "\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_before_or_after_the_command(capsys, monkeypatch, bigbench_dir, where):
  """`--vocab` is read on either side of the command, and chosen without touching the
  environment (nothing for another module to read behind the caller's back)."""
  from symbol_tuning import settings
  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel

  path = str(settings.assets_dir() / vocab.LOCAL_VOCAB)
  monkeypatch.setenv("SYMBOL_TUNING_VOCAB", "local")
  command = ["inspect", "symbol_tuning.bigbench.navigate", "--num", "1", "--json"]
  argv = ["--vocab", path] + command if where == "before" else command + ["--vocab", path]
  code, out, err = run(capsys, *argv)
  assert code == 0, err
  assert json.loads(out)["task"] == "symbol_tuning.bigbench.navigate"
  assert vocab.current_spec() == path and os.environ["SYMBOL_TUNING_VOCAB"] == "local"


@pytest.mark.parametrize("argv,expected", [
    (["demo", "--vocb", "local"], "symbol-tuning demo: error: unrecognized option '--vocb'; "
                                  "did you mean --vocab?"),
    (["eval", "--checkpont", "x"], "symbol-tuning eval: error: unrecognized option "
                                   "'--checkpont'; did you mean --checkpoint?"),
    (["train", "--gin.X=1", "--gin_fle=a.gin"], "symbol-tuning train: error: unrecognized "
                                                "option '--gin_fle'; did you mean --gin_file?"),
    (["lsit"], "symbol-tuning: error: argument COMMAND: invalid choice: 'lsit'; "
               "did you mean 'list'?"),
    (["demo", "stray"], "symbol-tuning demo: error: unrecognized arguments: stray"),
    # An option's wrong choice is answered with that option's choices, not the commands.
    (["--source", "tfd", "list"], "symbol-tuning: error: argument --source: invalid choice: "
                                  "'tfd'; did you mean 'tfds'?"),
    (["--source", "x", "list"], "symbol-tuning: error: argument --source: invalid choice: "
                                "'x'; choose from ['hf', 'tfds']"),
])
def test_unknown_option_or_command_is_one_line_with_the_closest(capsys, argv, expected):
  try:
    code = cli.main(argv)
  except SystemExit as e:  # argparse's own errors (a wrong command) exit from the parser
    code = e.code
  err = capsys.readouterr().err
  assert code == 2 and err.strip() == expected
