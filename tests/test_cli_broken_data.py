"""Every CLI command on broken local copies: a one-line error (or an `unavailable` row, or a
skipped task), never a traceback, never a hang; `list` shows both splits of evaluation tasks."""
import json
import os
import subprocess
import sys

import pytest

from symbol_tuning import cli
from symbol_tuning.data import pipeline, prompts
from symbol_tuning.data.sources import bigbench
from xla_flags import xla_flags


def write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def subj_rows(n):
  return [{"text": f"sentence {i} about the film", "label": i % 2} for i in range(n)]


@pytest.fixture
def broken_copies(tmp_path):
  """subj: a good query (test) file, an exemplar (train) file cut mid-record; rte: a train
  file with a record missing its closing brace."""
  data = tmp_path / "data"
  write_jsonl(data / "subj" / "test.jsonl", subj_rows(12))
  (data / "subj" / "train.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in subj_rows(12)) + '{"text": "cut off", "lab')
  (data / "rte").mkdir()
  (data / "rte" / "train.jsonl").write_text(
      '{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": "p", "hypothesis": "h"\n')
  return data


COMMANDS = {
    "list": (["list", "--filter", "eval.subj.labels"], 0),
    "inspect": (["inspect", "symbol_tuning.eval.subj.labels", "--split", "validation"], 2),
    "export": (["export", "symbol_tuning.tune.rte", "--out", "{tmp}/out.jsonl"], 2),
    "stats": (["stats", "symbol_tuning.instruct.rte", "--num", "5"], 2),
    "eval": (["eval", "--checkpoint", "random:tiny", "--suite", "paper", "--tasks", "subj",
              "--settings", "labels", "--out", "{tmp}/eval", "--no_progress"], 1),
    "train": (["train", "--gin_file=local/symbol_tuning_bigbench_tiny.gin",
               "--gin.MODEL_DIR='{tmp}/run'", "--gin.MIXTURE_OR_TASK_NAME='symbol_tuning.tune.rte'",
               "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=2", "--no_progress"], 2),
}


# Runs each command of COMMANDS (JSON in argv[1]) through cli.main in this one process, as
# a user's shell would run it (its stdout and stderr captured at the file descriptors, so
# what libraries log is captured too), and writes {name: [exit code, stdout, stderr]} to
# argv[2]. One process for all: importing TensorFlow and jax once, not once per command.
DRIVER = r"""
import json, os, sys, tempfile, traceback
from symbol_tuning import cli
results = {}
for name, argv in json.loads(sys.argv[1]).items():
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
    try:
      try:
        code = cli.main(argv)
      except SystemExit as e:
        code = e.code
      except BaseException:
        traceback.print_exc()
        code = None
    finally:
      sys.stdout.flush(); sys.stderr.flush()
      os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    out.seek(0); err.seek(0)
    results[name] = [code, out.read(), err.read()]
with open(sys.argv[2], "w") as f:
  json.dump(results, f)
"""


def test_no_command_hangs_or_prints_a_traceback_on_broken_copies(tmp_path, broken_copies):
  env = dict(os.environ, SYMBOL_TUNING_DATA_DIR=str(broken_copies))
  env["XLA_FLAGS"] = xla_flags()  # one CPU device
  argvs = {name: ["--vocab", "local", *(a.replace("{tmp}", str(tmp_path)) for a in argv)]
           for name, (argv, _) in COMMANDS.items()}
  procs = {"cli": subprocess.Popen(
      [sys.executable, "-c", DRIVER, json.dumps(argvs), str(tmp_path / "results.json")],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)}
  # The HF export is its own process: huggingface_hub reads HF_ENDPOINT when imported.
  procs["hf export"] = subprocess.Popen(
      [sys.executable, "-m", "symbol_tuning.data.sources.hf", "export", "--out", str(tmp_path / "x"),
       "--keys", "rte"], env=dict(env, HF_DATASETS_OFFLINE="0", HF_HUB_OFFLINE="0",
                                  HF_ENDPOINT="http://127.0.0.1:9"),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  results = {}
  for name, proc in procs.items():
    try:
      out, err = proc.communicate(timeout=600)  # a guard against hangs, not a speed check
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.communicate()
      pytest.fail(f"`{name}` hung on a broken local copy")
    results[name] = (proc.returncode, out, err)
  code, out, err = results.pop("cli")
  assert code == 0 and "Traceback" not in err, err[-3000:]
  results.update(json.loads((tmp_path / "results.json").read_text()))
  for name, (argv, code) in COMMANDS.items():
    got, out, err = results[name]
    assert got == code, (name, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, (name, err[-2000:])
  train_json = str(broken_copies / "subj" / "train.jsonl")
  _, out, _ = results["list"]
  assert "unavailable: dataset 'subj': cannot read " + train_json + ", line 13" in out
  for name in ("inspect", "export", "stats", "train"):
    err = results[name][2]
    errors = [l for l in err.splitlines() if l.startswith(f"symbol-tuning {name}:")]
    assert len(errors) == 1, (name, err[-2000:])
    assert errors[0].startswith(f"symbol-tuning {name}: error: dataset "), errors
    assert "Failed to load JSON" not in err, err[-2000:]  # said once, by us
    assert ", line " in errors[0] and "SYMBOL_TUNING_DATA_DIR" not in errors[0], errors
  _, _, err = results["eval"]
  assert "skipped subj (labels)" in err and "cannot read " + train_json + ", line 13" in err
  code, _, err = results["hf export"]
  assert code == 1 and "rte/train: FAILED" in err and "FAILED: rte" in err
  assert "Traceback" not in err, err[-2000:]


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_list_shows_query_and_exemplar_splits_with_filtered_counts(capsys, tmp_path, monkeypatch):
  rows = subj_rows(12)
  write_jsonl(tmp_path / "subj" / "test.jsonl", rows + [{"text": " ", "label": 0}])
  write_jsonl(tmp_path / "subj" / "train.jsonl", rows + [{"text": "", "label": 1}] * 2)
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  pipeline.clear_caches()
  code, out, _ = run(capsys, "list", "--json", "--filter", "eval.subj.labels")
  assert code == 0
  (row,) = [json.loads(line) for line in out.splitlines()][:1]
  assert row["data_split"] == "test" and row["num_examples"] == 12
  assert row["filtered"] == {"empty_input:text": 1}
  assert row["exemplars"] == {"split": "train", "num_examples": 12,
                              "filtered": {"empty_input:text": 2}}
  code, out, _ = run(capsys, "list", "--filter", "eval.subj.labels")
  assert ("12 test (1 filtered: {'empty_input:text': 1}); exemplars 12 train "
          "(2 filtered: {'empty_input:text': 2})") in out.splitlines()[0]
  pipeline.clear_caches()


def test_inspect_query_index_is_the_index_in_the_split(capsys, bigbench_dir):
  code, out, _ = run(capsys, "inspect", "symbol_tuning.bigbench.navigate", "--num", "6",
                     "--json")
  assert code == 0
  examples = bigbench.read_task("navigate")["examples"]
  validation = set(bigbench.split_indices("navigate", len(examples))["validation"])
  for rec in map(json.loads, out.splitlines()):
    assert rec["query_index"] not in validation  # an index into task.json's train part
    query = rec["inputs"].split(prompts.EXEMPLAR_SEPARATOR)[-1]
    assert examples[rec["query_index"]]["input"].strip() in query
