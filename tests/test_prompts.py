import random

import pytest

from symbol_tuning.data import prompts, symbols

LABELS = ("negative", "positive")


def make_data(n_per_class=30, labels=LABELS, instruction="Is it positive?"):
  examples = []
  for i in range(n_per_class * len(labels)):
    examples.append(prompts.Example(index=i, text=f"text {i} " + "word " * (i % 7),
                                    label=i % len(labels)))
  return prompts.LabelledData("toy", tuple(labels), tuple(examples), instruction)


def build(setting="tune", seed=0, query_pos=5, data=None, **kw):
  data = data or make_data()
  pool = symbols.get_pool(prompts.SETTINGS[setting].symbol_pool)
  return prompts.build_prompt(data, data.examples[query_pos], prompts.SETTINGS[setting], seed,
                              sample_symbols=pool.sample, **kw), data


def test_templates_are_the_papers_ten():
  assert len(prompts.TEMPLATES) == 10
  assert prompts.render_query(prompts.TEMPLATES[0], "q") == "Input: q\nOutput:"
  assert prompts.render_query(prompts.TEMPLATES[8], "q") == "q ->"
  assert prompts.render(prompts.TEMPLATES[6], "x", "y") == "X = x\nY = y"


def test_tuning_prompt_structure():
  for seed in range(50):
    p, data = build(seed=seed)
    m = p.metadata
    template = prompts.TEMPLATES[m["template"] - 1]
    assert 2 <= m["k"] <= 10 and m["k"] == m["k_drawn"]
    blocks = p.inputs.split(prompts.EXEMPLAR_SEPARATOR)
    assert len(blocks) == 2 * m["k"] + 1
    assert blocks[-1] == prompts.render_query(template, data.examples[5].text)
    assert 5 not in m["exemplars"]  # the query is never its own exemplar
    # Every exemplar is rendered with the prompt's template and its class's symbol.
    by_index = {ex.index: ex for ex in data.examples}
    for block, idx in zip(blocks[:-1], m["exemplars"]):
      ex = by_index[idx]
      assert block == prompts.render(template, ex.text, m["options"][ex.label])
    labels = [by_index[i].label for i in m["exemplars"]]
    assert labels.count(0) == labels.count(1) == m["k"]
    assert p.targets == m["options"][data.examples[5].label] == m["symbols"][LABELS[1]]
    assert len(set(m["options"])) == 2 and not set(m["options"]) & set(LABELS)
    assert not m["instruction"] and "Is it positive?" not in p.inputs


def test_exemplars_are_interleaved_not_grouped():
  grouped = 0
  for seed in range(40):
    p, data = build(seed=seed)
    labels = [data.examples[i].label for i in p.metadata["exemplars"]]
    grouped += labels == sorted(labels) or labels == sorted(labels, reverse=True)
  assert grouped < 4


def test_same_seed_same_prompt_and_seeds_differ():
  assert build(seed=7)[0] == build(seed=7)[0]
  assert len({build(seed=s)[0].inputs for s in range(20)}) == 20


def test_k_and_templates_spread_over_their_ranges():
  ks, templates = set(), set()
  for seed in range(400):
    m = build(seed=seed)[0].metadata
    ks.add(m["k"])
    templates.add(m["template"])
  assert ks == set(range(2, 11)) and templates == set(range(1, 11))


@pytest.mark.parametrize("setting,instr,kind", [
    ("instr_labels", True, "natural"), ("instr_symbols", True, "symbols"),
    ("labels", False, "natural"), ("symbols", False, "symbols"), ("flipped", False, "flipped")])
def test_evaluation_settings(setting, instr, kind):
  p, data = build(setting, seed=3, query_pos=4)  # query 4 is class 0 (negative)
  m = p.metadata
  assert m["k"] == 4 and m["instruction"] == instr
  assert p.inputs.startswith("Is it positive?\n\n") == instr
  if kind == "natural":
    assert m["options"] == list(LABELS) and p.targets == "negative"
  elif kind == "flipped":
    # Flipped labels swap the exemplars' labels and the query's gold answer alike.
    assert m["options"] == ["positive", "negative"] and p.targets == "positive"
    by_index = {ex.index: ex for ex in data.examples}
    template = prompts.TEMPLATES[m["template"] - 1]
    for block, idx in zip(p.inputs.split("\n\n"), m["exemplars"]):
      wrong = "positive" if by_index[idx].label == 0 else "negative"
      assert block == prompts.render(template, by_index[idx].text, wrong)
  else:
    assert all(s in symbols.get_pool("eval") for s in m["options"])
    assert p.targets == m["options"][0]


def test_flipped_needs_a_binary_task():
  data = make_data(labels=("a1", "b1", "c1"))
  with pytest.raises(prompts.PromptError, match="binary"):
    build("flipped", data=data)


def test_fitting_drops_whole_exemplars_equally_and_never_cuts_the_query():
  count = lambda text: len(text.split())  # a stand-in tokenizer: one token per word
  full, _ = build(seed=1)
  budget = count(full.inputs) // 2
  p, data = build(seed=1, count_tokens=count, max_input_tokens=budget)
  m = p.metadata
  assert m["num_input_tokens"] == count(p.inputs) <= budget
  assert 1 <= m["k"] < m["k_drawn"] and m["num_dropped"] == 2 * (m["k_drawn"] - m["k"])
  # The largest k that fits was kept: one more exemplar per class cannot fit.
  by_index = {ex.index: ex for ex in data.examples}
  dropped = [i for i in full.metadata["exemplars"] if i not in m["exemplars"]]
  cheapest = [min(count(prompts.render(prompts.TEMPLATES[m["template"] - 1],
                                       by_index[i].text, m["options"][c]))
                  for i in dropped if by_index[i].label == c) for c in (0, 1)]
  assert count(p.inputs) + sum(cheapest) > budget
  assert p.inputs.endswith(full.inputs.split("\n\n")[-1])  # the query is whole
  labels = [data.examples[i].label for i in m["exemplars"]]
  assert labels.count(0) == labels.count(1) == m["k"]
  # The same draws as the unfitted prompt: the kept exemplars are a subset of those.
  assert set(m["exemplars"]) <= set(full.metadata["exemplars"])


def test_prompt_that_cannot_fit_raises():
  count = lambda text: len(text.split())
  with pytest.raises(prompts.PromptError, match="does not fit"):
    build(seed=1, count_tokens=count, max_input_tokens=8)


def test_too_few_examples_in_a_class_names_the_class():
  examples = [prompts.Example(i, f"t{i}", 0) for i in range(20)] + [prompts.Example(20, "x", 1)]
  data = prompts.LabelledData("toy", LABELS, tuple(examples))
  with pytest.raises(prompts.PromptError, match="'positive' has 1 training examples"):
    prompts.build_prompt(data, examples[0], prompts.SETTINGS["labels"], 0)


def test_zero_shot_instruct_setting():
  seen_zero = False
  for seed in range(30):
    p, _ = build("instruct", seed=seed)
    assert p.inputs.startswith("Is it positive?")
    if p.metadata["k"] == 0:
      seen_zero = True
      assert p.inputs.count("\n\n") == 1
  assert seen_zero


def test_random_is_a_pure_function_of_the_seed():
  state = random.getstate()
  build(seed=11)
  assert random.getstate() == state  # the global RNG is untouched
