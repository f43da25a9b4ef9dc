import json
import lzma
import tarfile

import pytest

from symbol_tuning import settings
from symbol_tuning.data import catalogue, pipeline, sources
from symbol_tuning.data.sources import bigbench, hf

RTE = catalogue.get("tune", "rte")


@pytest.fixture(autouse=True)
def fresh_caches():
  pipeline.clear_caches()
  yield
  pipeline.clear_caches()


def write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def rte_rows(n=12):
  rows = [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "label": i % 2, "idx": i}
          for i in range(n)]
  rows.append({"premise": "p", "hypothesis": "h", "label": -1, "idx": n})  # unlabelled
  rows.append({"premise": "  ", "hypothesis": "h", "label": 0, "idx": n + 1})  # empty input
  rows.append({"premise": "p", "hypothesis": "h", "label": "not_entailment", "idx": n + 2})
  return rows


def test_hf_local_jsonl_filters_and_counts(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "rte" / "train.jsonl", rte_rows())
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  loaded = sources.load_split(RTE, "train")
  assert len(loaded.examples) == 13 and loaded.num_records == 15
  assert loaded.filtered == {"unlabelled": 1, "empty_input:premise": 1}
  first = loaded.examples[0]
  assert first.text == "premise 0\nhypothesis 0" and first.label == 0
  assert loaded.examples[-1].label == 1  # the label name "not_entailment" maps to class 1
  assert loaded.origin.endswith("train.jsonl")


def test_hf_local_save_to_disk_and_parquet(tmp_path, monkeypatch):
  datasets = pytest.importorskip("datasets")
  rows = rte_rows(6)[:6]
  columns = {k: [r[k] for r in rows] for k in rows[0]}
  datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns)}).save_to_disk(
      str(tmp_path / "rte"))
  sst2 = catalogue.get("tune", "sst2")
  (tmp_path / "sst2").mkdir()
  datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}).to_parquet(
      str(tmp_path / "sst2" / "train.parquet"))
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  assert len(sources.load_split(RTE, "train").examples) == 6
  assert [e.label for e in sources.load_split(sst2, "train").examples] == [1, 0]
  with pytest.raises(sources.DataSourceError, match="splits \\['train'\\], not 'validation'"):
    sources.load_split(RTE, "validation")


@pytest.mark.parametrize("row,match", [
    ({"premise": "p", "label": 0}, "example 0: missing field 'hypothesis'"),
    ({"premise": "p", "hypothesis": "h"}, "example 0: missing field 'label'"),
    ({"premise": "p", "hypothesis": "h", "label": 7}, "field 'label': label 7 is outside"),
    ({"premise": "p", "hypothesis": "h", "label": "maybe"}, "label 'maybe' is outside"),
])
def test_hf_bad_records_name_dataset_example_and_field(tmp_path, monkeypatch, row, match):
  write_jsonl(tmp_path / "rte" / "train.jsonl", [row])
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  with pytest.raises(sources.DataSourceError, match=match) as info:
    sources.load_split(RTE, "train")
  assert "dataset 'rte'" in str(info.value)


def test_hf_cap_is_a_fixed_subset(tmp_path, monkeypatch):
  write_jsonl(tmp_path / "rte" / "train.jsonl", rte_rows(40)[:40])
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(tmp_path))
  entry = catalogue.dataclasses.replace(RTE, max_examples=25)
  a = sources.load_split(entry, "train")
  pipeline.clear_caches()
  b = sources.load_split(entry, "train")
  assert len(a.examples) == 25 and a.filtered == {"over_cap": 15} and a.examples == b.examples
  assert [e.index for e in a.examples] == sorted(e.index for e in a.examples)


def test_unreachable_hub_fails_fast_with_a_local_copy_hint(monkeypatch):
  monkeypatch.delenv("SYMBOL_TUNING_DATA_DIR", raising=False)
  monkeypatch.setattr(hf, "hub_unreachable", lambda: "huggingface.co is unreachable (test)")
  with pytest.raises(sources.DataSourceError, match="SYMBOL_TUNING_DATA_DIR") as info:
    sources.load_split(RTE, "train")
  assert "nyu-mll" not in str(info.value) and "aps/super_glue" in str(info.value)


def write_task(root, path, examples, **extra):
  folder = root / path
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "task.json").write_text(json.dumps({"name": path, "examples": examples, **extra}))


def toy_bigbench_entry(**kw):
  values = dict(key="toy", name="toy", group="bigbench", source="bigbench", path="toy",
                labels=("Yes", "No"), label_field="target_scores", label_values=("Yes", "No"),
                drop_label_values=())
  values.update(kw)
  return catalogue.DatasetEntry(**values)


def test_bigbench_target_scores_as_dict_or_string_and_ties(tmp_path, monkeypatch):
  examples = [{"input": f"q{i}", "target_scores": {"Yes": i % 2, "No": 1 - i % 2}}
              for i in range(20)]
  examples.append({"input": "s", "target_scores": "{'Yes': 1, 'No': 0}"})  # string literal
  examples.append({"input": "tie", "target_scores": {"Yes": 1, "No": 1}})
  examples.append({"input": "   ", "target_scores": {"Yes": 1, "No": 0}})
  write_task(tmp_path, "toy", examples, task_prefix="Answer yes or no.\n")
  monkeypatch.setenv("BIGBENCH_DIR", str(tmp_path))
  entry = toy_bigbench_entry()
  train, val = sources.load_split(entry, "train"), sources.load_split(entry, "validation")
  total = {**{k: 0 for k in ("tied_target_scores", "empty_input:input")}}
  for part in (train, val):
    for k, v in part.filtered.items():
      total[k] += v
  assert total == {"tied_target_scores": 1, "empty_input:input": 1}
  indices = [e.index for e in train.examples + val.examples]
  assert len(indices) == 21 and len(set(indices)) == 21
  by_index = {e.index: e for e in train.examples + val.examples}
  assert by_index[20].label == 0 and by_index[20].text == "s"
  assert sources.instruction(entry) == "Answer yes or no."


@pytest.mark.parametrize("scores,match", [
    ("{'Yes': 1, 'No': ", "not a dict literal"),
    ("__import__('os')", "not a dict literal"),
    ([1, 0], "expected a non-empty dict"),
    ({"Yes": 1, "Maybe": 0}, "do not match the class list"),
])
def test_bigbench_malformed_target_scores(tmp_path, monkeypatch, scores, match):
  write_task(tmp_path, "toy", [{"input": "a", "target_scores": {"Yes": 1, "No": 0}},
                               {"input": "b", "target_scores": scores}])
  monkeypatch.setenv("BIGBENCH_DIR", str(tmp_path))
  with pytest.raises(sources.DataSourceError, match=match) as info:
    sources.load_split(toy_bigbench_entry(), "train")
  assert "dataset 'toy'" in str(info.value) and "example 1" in str(info.value)
  assert "target_scores" in str(info.value)


def test_bigbench_missing_task_under_bigbench_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("BIGBENCH_DIR", str(tmp_path))
  with pytest.raises(sources.DataSourceError, match="no .*toy/task.json"):
    sources.load_split(toy_bigbench_entry(), "train")


def test_extraction_keeps_only_wanted_tasks(tmp_path):
  src = tmp_path / "src" / "bigbench-1.0.0" / "bigbench" / "benchmark_tasks"
  for path in ("navigate", "list_functions/c001", "unrelated"):
    write_task(src, path, [{"input": "x", "target": "y"}])
  archive = tmp_path / "bigbench-1.0.0.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(tmp_path / "src" / "bigbench-1.0.0", arcname="bigbench-1.0.0")
  dest = tmp_path / "cache"
  assert bigbench.extract_task_files(archive, dest, ["navigate", "list_functions"]) == 2
  assert (dest / "navigate" / "task.json").is_file()
  assert (dest / "list_functions" / "c001" / "task.json").is_file()
  assert not (dest / "unrelated").exists()


def test_without_bigbench_dir_the_packaged_tasks_are_extracted_once(tmp_path, monkeypatch,
                                                                     capfd):
  monkeypatch.delenv("BIGBENCH_DIR", raising=False)
  monkeypatch.setenv("SYMBOL_TUNING_CACHE", str(tmp_path / "cache"))
  bigbench.shipped_root.cache_clear()
  try:
    root = bigbench.task_root("multiemo/products_sentence_en")
    err = capfd.readouterr().err
    assert root.parent == tmp_path / "cache" / "bigbench"
    assert f"extracted 295 task.json files from the package's bigbench_tasks.tar.xz into {root}" \
        in err
    for task in bigbench.wanted_tasks():  # every task the package reads is in the archive
      assert list((root / task).rglob("task.json")), task
    bigbench.shipped_root.cache_clear()  # a second process finds the copy and says nothing
    assert bigbench.task_root("navigate") == root
    assert "extracted" not in capfd.readouterr().err
    with pytest.raises(sources.DataSourceError, match="not in the package's .*BIGBENCH_DIR"):
      bigbench.task_root("no_such_task")
  finally:
    bigbench.shipped_root.cache_clear()


def test_packaged_archive_is_what_pack_makes_from_its_files(tmp_path, bigbench_dir):
  del tmp_path
  data, count = bigbench.task_tar(bigbench_dir)
  assert count == 295
  shipped = settings.assets_dir() / bigbench.ARCHIVE_NAME
  assert lzma.decompress(shipped.read_bytes()) == data


def test_real_bigbench_suite_loads_with_disjoint_deterministic_splits(bigbench_dir):
  entries = catalogue.load("bigbench")
  assert len([e for e in entries if e.role == "tune"]) == 18
  assert len([e for e in entries if e.role == "heldout"]) == 11
  for entry in entries:
    train = sources.load_split(entry, "train")
    val = sources.load_split(entry, "validation")
    a = {e.index for e in train.examples}
    b = {e.index for e in val.examples}
    assert not a & b, entry.key
    assert len(b) == min(max(int((len(a) + len(b) + sum(train.filtered.values())
                                  + sum(val.filtered.values())) * 0.2), 1), 500) - sum(
                                      val.filtered.values()), entry.key
    assert set(e.label for e in train.examples) == set(range(entry.num_classes)), entry.key
    if entry.role == "heldout":
      assert sources.instruction(entry), entry.key
  # Deterministic: the same split after forgetting everything.
  first = sources.load_split(entries[0], "validation").examples
  pipeline.clear_caches()
  assert sources.load_split(entries[0], "validation").examples == first
  # multiemo has whitespace-only inputs in the real data: filtered and counted.
  products = catalogue.get("bigbench", "multiemo_products_sentence_en")
  counted = sum(sources.load_split(products, s).filtered.get("empty_input:input", 0)
                for s in ("train", "validation"))
  assert counted == 2


def test_catalogue_entries_are_complete():
  tune, ev = catalogue.load("tune"), catalogue.load("eval")
  assert [e.key for e in tune] == [
      "rte", "wnli", "qnli", "mnli", "snli", "cb", "sst2", "rotten_tomatoes",
      "tweet_eval_sentiment", "qqp", "mrpc", "paws", "copa", "piqa", "ag_news", "trec", "wsc",
      "winogrande", "tweet_eval_offensive", "tweet_eval_irony", "wic", "cola"]
  assert [e.key for e in ev] == ["subj", "teh", "teab", "teat", "tefe", "tehi", "adec", "or",
                                 "sot", "tos", "tc"]
  for entry in tune + ev:
    assert entry.hf_id and "/" in entry.hf_id, entry.key  # canonical ids live under an org
    assert entry.instruction, entry.key
  # Chance level averaged over the 11 evaluation tasks is the paper's 42.4%.
  chance = sum(1 / e.num_classes for e in ev) / len(ev)
  assert round(chance * 100, 1) == 42.4
