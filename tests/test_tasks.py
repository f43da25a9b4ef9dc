"""The seqio layer: registration, determinism, fitting to the budget, mixtures."""
import json

import pytest
import seqio

import symbol_tuning.data.tasks as st_tasks
from symbol_tuning.data import catalogue, pipeline, prompts, vocab

PASS = list(st_tasks.METADATA_FEATURES) + ["inputs_pretokenized", "targets_pretokenized", "task"]


def take(name, n, seed=0, split="train", lengths=None, **kw):
  provider = seqio.get_mixture_or_task(name)
  if hasattr(provider, "tasks"):
    kw["passthrough_features"] = PASS
  ds = provider.get_dataset(lengths or {"inputs": 2048, "targets": 512}, split=split,
                            shuffle=True, seed=seed, num_epochs=1, **kw)
  return list(ds.take(n).as_numpy_iterator())


def test_every_task_and_mixture_is_registered():
  names = set(seqio.TaskRegistry.names())
  for entry in catalogue.load("tune"):
    assert f"symbol_tuning.tune.{entry.key}" in names
    assert f"symbol_tuning.instruct.{entry.key}" in names
  for entry in catalogue.load("bigbench"):
    family = "bigbench" if entry.role == "tune" else "eval_bigbench.x"
    if entry.role == "tune":
      assert f"symbol_tuning.bigbench.{entry.task_key}" in names
    else:
      for setting in ("instr_labels", "instr_symbols", "labels", "symbols"):
        assert f"symbol_tuning.eval_bigbench.{entry.task_key}.{setting}" in names
    del family
  flipped = sorted(n.split(".")[2] for n in names
                   if n.startswith("symbol_tuning.eval.") and n.endswith(".flipped"))
  assert flipped == ["adec", "or", "subj", "tc", "teh", "tos"]  # the six binary tasks
  mixtures = seqio.MixtureRegistry
  assert len(mixtures.get("symbol_tuning").tasks) == 22
  assert len(mixtures.get("instruction_tuning").tasks) == 22
  assert len(mixtures.get("symbol_tuning_bigbench").tasks) == 18
  assert "symbol_tuning_mix_16pct" in mixtures.names()
  assert "symbol_tuning_bigbench_mix_84pct" in mixtures.names()


def test_bigbench_mixture_rates_are_examples_proportional_with_cap(bigbench_dir):
  mixture = seqio.get_mixture_or_task("symbol_tuning_bigbench")
  for task in mixture.tasks:
    assert mixture.get_rate(task) == min(task.num_input_examples("train"), 25_000)


def test_task_prompts_are_deterministic_and_complete(bigbench_dir):
  name = "symbol_tuning.bigbench.navigate"
  a, b = take(name, 5, seed=3), take(name, 5, seed=3)
  assert [x["inputs_pretokenized"] for x in a] == [x["inputs_pretokenized"] for x in b]
  assert [x["inputs_pretokenized"] for x in a] != [
      x["inputs_pretokenized"] for x in take(name, 5, seed=4)]
  for ex in a:
    labels = json.loads(ex["labels_json"])
    assert ex["targets_pretokenized"].decode() == labels["options"][ex["gold"]]
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS
    assert 2 <= ex["k"] <= 10 and 1 <= ex["template"] <= 10


def test_tasks_sharing_data_get_different_draws(bigbench_dir):
  # Two tasks over the same dataset and setting differ only by name: the name is folded
  # into every seed, so a mixture never repeats one task's prompts in another.
  entry = catalogue.get("bigbench", "navigate")
  name = "symbol_tuning.test.navigate_twin"
  if name not in seqio.TaskRegistry.names():
    st_tasks._register_task(name, entry, prompts.SETTINGS["tune"], (("train", "train"),))
  a = take("symbol_tuning.bigbench.navigate", 4, seed=1)
  b = take(name, 4, seed=1)
  assert [x["query"] for x in a] == [x["query"] for x in b]  # same query order
  assert [x["inputs_pretokenized"] for x in a] != [x["inputs_pretokenized"] for x in b]


def test_prompts_fit_the_budget_and_the_query_is_never_cut(bigbench_dir):
  counter = vocab.TokenCounter()
  rows = take("symbol_tuning.bigbench.vitaminc_fact_verification", 40,
              lengths={"inputs": 512, "targets": 16})
  dropped = 0
  for ex in rows:
    text = ex["inputs_pretokenized"].decode()
    assert len(ex["inputs"]) <= 512
    assert list(ex["inputs"][:-1]) == counter.encode(text)  # nothing was trimmed
    dropped += ex["num_dropped"] > 0
  assert dropped > 10  # long passages: most prompts had to drop exemplars at 512 tokens


def test_eval_tasks_use_validation_queries_and_fixed_prompts(bigbench_dir):
  name = "symbol_tuning.eval_bigbench.anachronisms.flipped"
  task = seqio.get_mixture_or_task(name)
  assert task.num_input_examples("validation") == 46
  rows = take(name, 46, seed=0, split="validation")
  for ex in rows:
    labels = json.loads(ex["labels_json"])
    assert labels["options"] == ["No", "Yes"]  # flipped natural labels
    assert ex["k"] == 4
    assert ex["targets_pretokenized"].decode() == ["No", "Yes"][ex["gold"]]
  assert [x["inputs_pretokenized"] for x in rows] == [
      x["inputs_pretokenized"] for x in take(name, 46, seed=0, split="validation")]


def test_hf_task_from_a_local_copy(tmp_path, monkeypatch):
  rows = [{"sentence": f"a {'good' if i % 2 else 'bad'} film number {i}", "label": i % 2}
          for i in range(40)]
  (tmp_path / "sst2").mkdir()
  (tmp_path / "sst2" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  pipeline.clear_caches()
  try:
    task = seqio.get_mixture_or_task("symbol_tuning.tune.sst2")
    assert task.num_input_examples("train") == 40
    out = take("symbol_tuning.tune.sst2", 40)
    assert sorted(int(x["query"]) for x in out) == list(range(40))
    instruct = take("symbol_tuning.instruct.sst2", 3)
    for ex in instruct:
      assert ex["targets_pretokenized"].decode() in ("negative", "positive")
      assert ex["inputs_pretokenized"].decode().startswith(
          "Is the sentiment of the following sentence negative or positive?")
  finally:
    pipeline.clear_caches()


def test_symbol_tuning_mix(bigbench_dir):
  name = st_tasks.symbol_tuning_mix(0.25, "instruction_tuning_bigbench",
                                    symbol_mixture="symbol_tuning_bigbench")
  assert name == "symbol_tuning_bigbench_25pct_instruction_tuning_bigbench"
  assert st_tasks.symbol_tuning_mix(0.25, "instruction_tuning_bigbench",
                                    symbol_mixture="symbol_tuning_bigbench") == name
  mixture = seqio.get_mixture_or_task(name)
  rates = {m.name: mixture.get_rate(m) for m in mixture.tasks}
  total = sum(rates.values())
  symbol_share = sum(r for t, r in rates.items() if ".bigbench." in t) / total
  assert symbol_share == pytest.approx(0.25)
  with pytest.raises(ValueError, match="fraction"):
    st_tasks.symbol_tuning_mix(1.5)
  with pytest.raises(ValueError, match="no task or mixture named 'flan'"):
    st_tasks.symbol_tuning_mix(0.5, "flan")


def test_decoder_only_single_length_counts_prompt_answer_and_eos(bigbench_dir):
  """{'targets': L}: prompt + EOS + answer + EOS fit L together (not the prompt in L and the
  answer besides); nothing is trimmed, so the query is never cut."""
  counter = vocab.TokenCounter()
  length = 300
  rows = take("symbol_tuning.bigbench.vitaminc_fact_verification", 24,
              lengths={"targets": length})
  totals = []
  for ex in rows:
    assert list(ex["inputs"][:-1]) == counter.encode(ex["inputs_pretokenized"].decode())
    assert list(ex["targets"][:-1]) == counter.encode(ex["targets_pretokenized"].decode())
    totals.append(len(ex["inputs"]) + len(ex["targets"]))
  assert max(totals) <= length
  assert sum(ex["num_dropped"] > 0 for ex in rows) > 10  # fitted, by dropping exemplars
  assert max(totals) > length - 40  # and the whole sequence budget is used


def test_build_sequence_reserves_exactly_the_answer(bigbench_dir):
  spec = seqio.get_mixture_or_task("symbol_tuning.bigbench.vitaminc_fact_verification").source.spec
  builder = pipeline.PromptBuilder(spec, "train", None)
  checked = 0
  for position in range(12):
    try:
      p = builder.build_sequence(position, 0, 400)
    except prompts.PromptError:
      continue  # a long passage that cannot fit with one exemplar per class
    answer = len(builder.pieces(p.targets))
    assert len(p.input_ids) + 1 + answer + 1 <= 400
    assert p == builder.build(position, 0, 400 - 2 - answer)  # the same draws, exact fit
    assert p.inputs.endswith(prompts.render_query(
        prompts.TEMPLATES[p.metadata["template"] - 1], builder.queries[position].text))
    checked += 1
  assert checked >= 6
