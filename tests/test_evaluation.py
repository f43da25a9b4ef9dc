"""Evaluation suites, reports and the `eval` / `compare` commands (tiny random models)."""
import json
import re

import numpy as np
import pytest
import seqio

import symbol_tuning.data.tasks  # noqa: F401  (registers the tasks)
from symbol_tuning import cli
from symbol_tuning.data import catalogue, pipeline, prompts, sources, symbols
from symbol_tuning.commands import evaluate
from symbol_tuning.data import algorithmic
from symbol_tuning.evaluation import report, scoring, suites

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build(suite, settings=None, tasks=None, max_examples=3, seed=0, **kw):
  units = suites.units(suite, settings, tasks_filter=tasks, **kw)
  items, skipped, _ = suites.build_all(units, seed=seed, max_examples=max_examples)
  assert not skipped, skipped
  return items


# ------------------------------------------------------------------------------------------
# Prompts and gold answers.
# ------------------------------------------------------------------------------------------
def test_decoder_only_input_length_bounds_prompt_and_every_option(bigbench_dir):
  """For a decoder-only model --input_length is the whole sequence: prompt (with EOS) and
  each option (with EOS) fit it together, with the same prompts' queries as for T5."""
  kw = dict(settings=["symbols", "labels"], tasks=["anachronisms"], max_examples=6,
            input_length=160)
  decoder = build("bigbench", answer_in_sequence=True, **kw)
  t5 = build("bigbench", **kw)
  assert decoder and all(len(it.input_ids) + max(map(len, it.option_ids)) <= 160
                         for it in decoder)
  assert any(len(it.input_ids) + max(map(len, it.option_ids)) > 160 for it in t5)


def test_settings_and_flipped_labels_give_the_right_gold_answers(bigbench_dir):
  entry = catalogue.get("bigbench", "anachronisms")
  data = pipeline.exemplar_data(entry)
  by_index = {ex.index: ex for ex in data.examples}
  eval_pool = symbols.get_pool("eval")
  items = build("bigbench", tasks=["anachronisms"], max_examples=4)
  assert {it.setting for it in items} == set(prompts.EVAL_SETTINGS)
  for it in items:
    spec = seqio.get_mixture_or_task(f"symbol_tuning.eval_bigbench.anachronisms.{it.setting}").source.spec
    query = pipeline.queries(spec, "validation")[it.position]
    assert it.gold == query.label  # the query's true class, in every setting
    assert it.target == it.options[it.gold]
    instruction = sources.instruction(entry)
    assert it.inputs.startswith(instruction) == it.setting.startswith("instr_")
    if it.setting in ("instr_labels", "labels"):
      assert it.options == list(entry.labels)
    elif it.setting in ("instr_symbols", "symbols"):
      assert len(set(it.options)) == 2 and all(o in eval_pool for o in it.options)
      assert not set(it.options) & set(entry.labels)
    else:  # flipped: the answer is the other class's natural label ...
      assert it.options == [entry.labels[1], entry.labels[0]]
      assert it.target == entry.labels[1 - query.label]
    # ... and every exemplar shows its class's label string of this setting.
    template = prompts.TEMPLATES[it.meta["template"] - 1]
    assert len(it.meta["exemplars"]) == 2 * 4  # k = 4 per class
    for index in it.meta["exemplars"]:
      ex = by_index[index]
      assert prompts.render(template, ex.text, it.options[ex.label]) in it.inputs
      if it.setting == "flipped":
        assert it.options[ex.label] == entry.labels[1 - ex.label]
    assert it.input_ids[-1] == 1 and all(o[-1] == 1 for o in it.option_ids)


def test_prompts_depend_only_on_the_seed(bigbench_dir):
  alone = build("bigbench", ["symbols"], tasks=["implicatures"], max_examples=3)
  together = [it for it in build("bigbench", ["labels", "symbols"], max_examples=3)
              if it.task == "implicatures" and it.setting == "symbols"]
  assert [it.inputs for it in alone] == [it.inputs for it in together]
  other = build("bigbench", ["symbols"], tasks=["implicatures"], max_examples=3, seed=1)
  assert [it.inputs for it in alone] != [it.inputs for it in other]


def test_paper_suite_chance_level_is_42_4_percent():
  for setting in ("instr_labels", "instr_symbols", "labels", "symbols"):
    assert round(suites.chance_level("paper", setting), 1) == 42.4
  assert suites.chance_level("paper", "flipped") == 50.0
  assert [e.key for e in suites.entries("paper") if suites.applies(e, "flipped")] == [
      "subj", "teh", "adec", "or", "tos", "tc"]
  assert suites.chance_level("list_functions", "generative") == 0.0
  with pytest.raises(ValueError, match="no setting"):
    suites.check_suite("bigbench", ["generative"])


def test_list_functions_prompts_and_subsets(bigbench_dir):
  assert algorithmic.parse_subset(None) == algorithmic.LIST_FUNCTIONS
  assert algorithmic.parse_subset("c001-c003,c010,c002") == ("c001", "c002", "c003", "c010")
  assert len(algorithmic.parse_subset("first20")) == 20
  with pytest.raises(ValueError, match="c999"):
    algorithmic.parse_subset("c999")
  task = json.loads((bigbench_dir / "list_functions" / "c002" / "task.json").read_text())
  made = algorithmic.list_function_prompts("c002", seed=0, max_examples=5)
  assert [p.position for p in made] == list(range(5))
  for p in made:
    assert p.inputs.count("Input: ") == 5 and p.inputs.endswith("Output:")
    assert p.target == task["examples"][p.position]["target"]
    assert p.position not in p.meta["shot_indices"]
    query = task["examples"][p.position]["input"]
    assert p.inputs.endswith(f"Input: {query}\nOutput:")
  assert [p.inputs for p in made] == [p.inputs for p in algorithmic.list_function_prompts(
      "c002", seed=0, max_examples=5)]
  assert [p.inputs for p in made] != [p.inputs for p in algorithmic.list_function_prompts(
      "c002", seed=1, max_examples=5)]


def test_turing_concepts_keep_concepts_of_at_most_three_instructions(bigbench_dir):
  concepts = algorithmic.turing_concepts(3)
  assert len(concepts) == 17 and sum(map(len, concepts.values())) == 85
  for concept in concepts:
    for p in algorithmic.turing_concept_prompts(concept):
      assert p.meta["instructions"] <= 3 and p.inputs.endswith("Output:")
      assert re.fullmatch(r"'[01]*'", p.target)
  assert len(algorithmic.turing_concepts(2)) < len(concepts)


def test_generative_suite_is_scored_by_exact_match(bigbench_dir):
  model = scoring.load_model("random:tiny", vocab_size=8000)
  records, results = evaluate.run_suite(model, "turing_concepts", tasks_filter=["+o", "o"],
                                        max_examples=2)
  assert results["metric"] == "exact_match" and results["settings"] == ["generative"]
  assert len(records) == 4 and all("prediction" in r and "scores" not in r for r in records)
  assert set(results["tasks"]) == {"+o", "o"}
  # The record's verdict is exact match of the greedy text, and the table says so.
  fake = suites.Item("o", "generative", 0, "x", [1], "'1'")
  assert report.example_record(fake, None, " '1' ")["exact_match"]
  assert report.example_record(fake, None, "'1 '")["exact_match"] is False
  assert "exact match" in report.run_markdown(results) and "`+o`" in report.run_markdown(results)


# ------------------------------------------------------------------------------------------
# seqio: the same tasks evaluate in t5x's eval binary.
# ------------------------------------------------------------------------------------------
def test_seqio_evaluator_computes_our_metrics(bigbench_dir):
  name = "symbol_tuning.eval_bigbench.fact_checker_covid19_scientific.labels"
  twin = "symbol_tuning.eval_bigbench_rank.fact_checker_covid19_scientific.labels"
  assert twin in [t.name for t in seqio.MixtureRegistry.get(
      "symbol_tuning_eval_bigbench_rank_labels").tasks]
  lengths = {"inputs": 2048, "targets": 16}
  evaluator = seqio.Evaluator(name, seqio.EncDecFeatureConverter(pack=False),
                              eval_split="validation", sequence_length=lengths, num_examples=6)
  targets = {i: ex["targets"] for i, ex in enumerate(
      evaluator.cached_task_datasets[name].as_numpy_iterator())}
  predict = lambda ds: [(i, targets[i][:-1].tolist()) for i, _ in ds.as_numpy_iterator()]
  result, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict)
  assert result.result()[name]["exact_match"] == 100.0

  ranker = seqio.Evaluator(twin, seqio.EncDecFeatureConverter(pack=False),
                           eval_split="validation", sequence_length=lengths)
  rows = list(ranker.cached_task_datasets[twin].as_numpy_iterator())
  assert len(rows) == 2 * seqio.get_mixture_or_task(name).num_input_examples("validation")
  assert all(r["targets_pretokenized"].decode() == json.loads(r["labels_json"])["options"][r["option"]]
             for r in rows)
  # A scorer that prefers the gold option scores 100%; one that always prefers option 0
  # scores the share of queries whose gold class is 0.
  gold = lambda ds: [(i, 0.0 if rows[i]["option"] == rows[i]["gold"] else -1.0)
                     for i, _ in ds.as_numpy_iterator()]
  first = lambda ds: [(i, -float(rows[i]["option"])) for i, _ in ds.as_numpy_iterator()]
  result, _ = ranker.evaluate(compute_metrics=True, score_fn=gold)
  assert result.result()[twin]["rank_classification_accuracy"] == 100.0
  result, _ = ranker.evaluate(compute_metrics=True, score_fn=first)
  share = np.mean([r["gold"] == 0 for r in rows if r["option"] == 0]) * 100
  assert result.result()[twin]["rank_classification_accuracy"] == pytest.approx(share)


def test_algorithmic_seqio_tasks_are_registered_without_reading_data():
  mixture = seqio.MixtureRegistry.get(algorithmic.LIST_FUNCTIONS_MIXTURE)
  assert len(mixture.tasks) == 250
  task = seqio.get_mixture_or_task(algorithmic.TURING_TASK)
  assert task.splits == ("validation",) and task.predict_metric_fns == [
      symbol_tuning.data.metrics.exact_match]
  assert algorithmic.TURING_TASK in [t.name for t in seqio.MixtureRegistry.get(
      algorithmic.TURING_MIXTURE).tasks]


# ------------------------------------------------------------------------------------------
# The commands, end to end.
# ------------------------------------------------------------------------------------------
def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


EVAL_ARGS = ("--suite", "bigbench", "--max_examples", "2", "--input_length", "512",
             "--settings", "labels,symbols,flipped")


def test_eval_and_compare_write_tables_json_and_plots(capsys, tmp_path, bigbench_dir):
  a, b, cmp_dir = tmp_path / "a", tmp_path / "b", tmp_path / "cmp"
  code, out, err = run(capsys, "eval", "--checkpoint", "random:tiny", *EVAL_ARGS,
                       "--out", str(a))
  assert code == 0, err
  code, _, err = run(capsys, "eval", "--checkpoint", "random:tiny:1", *EVAL_ARGS,
                     "--out", str(b), "--no_progress", "--label", "after")
  assert code == 0, err
  assert "| **average** |" in out and "| labels only | symbols only | flipped labels |" in out

  records = [json.loads(line) for line in (a / "predictions.jsonl").read_text().splitlines()]
  results = json.loads((a / "results.json").read_text())
  # 2 queries x 11 tasks x (labels, symbols) + 10 binary tasks x flipped; at 512 input
  # tokens some long prompts cannot fit even with one exemplar per class: counted, not scored.
  unfit = results["unfit_prompts"]
  assert unfit.get("causal_judgment/labels") == 2
  assert len(records) == results["num_examples"] == 11 * 2 * 2 + 10 * 2 - sum(unfit.values())
  assert results["skipped"] == [] and results["suite"] == "bigbench"
  for rec in records:
    assert rec["rank_prediction"] == int(np.argmax(rec["scores"]))
    assert rec["rank_correct"] == (rec["rank_prediction"] == rec["gold"])
    assert rec["target"] == rec["options"][rec["gold"]] and "prediction" in rec
  for setting in ("labels", "symbols", "flipped"):
    cells = [t["settings"][setting]["accuracy"] for t in results["tasks"].values()
             if setting in t["settings"]]
    assert results["average"][setting]["accuracy"] == pytest.approx(np.mean(cells))
  assert results["chance"]["flipped"] == 50.0
  # The same seed gives the same prompts whatever the model.
  other = [json.loads(line) for line in (b / "predictions.jsonl").read_text().splitlines()]
  assert [r["inputs"] for r in other] == [r["inputs"] for r in records]
  assert "| **average** |" in (a / "table.md").read_text()

  code, out, err = run(capsys, "compare", str(a), str(b), "--out", str(cmp_dir),
                       "--names", "before,after")
  assert code == 0, err
  cmp = json.loads((cmp_dir / "compare.json").read_text())
  for setting, cell in cmp["average"].items():
    assert cell["delta"] == pytest.approx(cell["b"] - cell["a"], abs=1e-3)
    assert cell["a"] == pytest.approx(results["average"][setting]["accuracy"], abs=1e-3)
  assert "before → after" in out and "| **average** |" in (cmp_dir / "compare.md").read_text()
  for png in ("settings.png", "tasks.png"):
    assert (cmp_dir / png).read_bytes()[:8] == PNG_MAGIC


def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_missing_data_is_skipped_with_a_reason_and_the_rest_evaluates(capsys, tmp_path,
                                                                       monkeypatch):
  # A local copy of SUBJ (train + test) evaluates; TEH's copy has too few 'hate' examples
  # for k = 4; the other nine datasets are not reachable offline.
  data = tmp_path / "data"
  _write_jsonl(data / "subj" / "train.jsonl",
               [{"text": f"sentence number {i} here", "label": i % 2} for i in range(12)])
  _write_jsonl(data / "subj" / "test.jsonl",
               [{"text": f"query {i}", "label": i % 2} for i in range(3)])
  _write_jsonl(data / "teh" / "train.jsonl",
               [{"text": f"tweet {i}", "label": int(i >= 10)} for i in range(12)])
  _write_jsonl(data / "teh" / "validation.jsonl", [{"text": "a tweet", "label": 0}])
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(data))
  pipeline.clear_caches()
  try:
    code, out, err = run(capsys, "eval", "--checkpoint", "random:tiny", "--suite", "paper",
                         "--settings", "labels,flipped", "--out", str(tmp_path / "run"),
                         "--no_progress")
  finally:
    pipeline.clear_caches()
  assert code == 0, err
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert set(results["tasks"]) == {"subj"}
  assert results["tasks"]["subj"]["settings"]["labels"]["n"] == 3
  skipped = {s["task"]: s for s in results["skipped"]}
  assert len(skipped) == 10 and skipped["teh"]["settings"] == ["labels", "flipped"]
  assert "class 'hate' has 2 examples" in skipped["teh"]["reason"]
  assert "SYMBOL_TUNING_DATA_DIR" in skipped["teh"]["reason"]
  assert "SYMBOL_TUNING_DATA_DIR" in skipped["teab"]["reason"]
  assert "HuggingFace cardiffnlp/tweet_eval" in skipped["teab"]["source"]
  lines = [line for line in err.splitlines() if line.startswith("symbol-tuning eval: skipped")]
  assert len(lines) == 10 and any(line.startswith("symbol-tuning eval: skipped teab") for line in lines)
  assert "Skipped" in (tmp_path / "run" / "table.md").read_text()


def test_eval_with_no_data_at_all_fails_clearly(capsys, tmp_path, monkeypatch):
  monkeypatch.delenv("SYMBOL_TUNING_DATA_DIR", raising=False)
  code, _, err = run(capsys, "eval", "--checkpoint", "random:tiny", "--suite", "paper",
                     "--settings", "symbols", "--out", str(tmp_path), "--no_progress")
  assert code == 1 and "nothing was evaluated (every task was skipped)" in err
  assert err.count("symbol-tuning eval: skipped") == 11


def test_eval_where_no_prompt_fits_says_to_raise_the_input_length(capsys, tmp_path, bigbench_dir):
  del bigbench_dir
  code, _, err = run(capsys, "eval", "--checkpoint", "random:tiny", "--suite", "bigbench",
                     "--settings", "symbols", "--max_examples", "1", "--input_length", "64",
                     "--out", str(tmp_path), "--no_progress")
  assert code == 1 and ("nothing was evaluated (no prompt fits --input_length 64 even with one "
                        "exemplar per class; raise it)") in err
