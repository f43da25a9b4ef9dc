"""Local copies in the formats publishers ship (JSONL, CSV, parquet, save_to_disk), right and
broken: class names checked against the catalogue, one label rule, clear errors."""
import json

import pytest

from symbol_tuning.data import catalogue, pipeline, sources
from symbol_tuning.evaluation import suites
from symbol_tuning.data.sources import hf

datasets = pytest.importorskip("datasets")

TREC = catalogue.get("tune", "trec")
RTE = catalogue.get("tune", "rte")
WINOGRANDE = catalogue.get("tune", "winogrande")
ADEC = catalogue.get("eval", "adec")
SUBJ = catalogue.get("eval", "subj")
# TREC's coarse classes in an older order than the catalogue's ABBR, ENTY, DESC, HUM, LOC, NUM.
OLD_TREC_ORDER = ["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"]


pytestmark = pytest.mark.usefixtures("data_dir")  # conftest: a fresh local-copy folder


def write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def trec(names):
  """TREC questions whose coarse label is stored under the given ClassLabel names."""
  features = datasets.Features({"text": datasets.Value("string"),
                                "coarse_label": datasets.ClassLabel(names=names)})
  rows = {"text": ["How did serfdom develop in and then leave Russia ?",  # DESC
                   "What is the full form of .com ?",  # ABBR
                   "Who killed Gandhi ?"],  # HUM
          "coarse_label": [names.index("DESC"), names.index("ABBR"), names.index("HUM")]}
  return datasets.Dataset.from_dict(rows, features=features)


@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet"])
def test_class_names_in_another_order_are_remapped_by_name(data_dir, capsys, fmt):
  ds = trec(OLD_TREC_ORDER)
  if fmt == "save_to_disk":
    datasets.DatasetDict({"train": ds}).save_to_disk(str(data_dir / "trec"))
  else:
    (data_dir / "trec").mkdir()
    ds.to_parquet(str(data_dir / "trec" / "train.parquet"))
  loaded = sources.load_split(TREC, "train")
  assert [TREC.labels[e.label] for e in loaded.examples] == ["description", "abbreviation",
                                                             "human"]
  assert len(loaded.notes) == 1 and "remapped by name" in loaded.notes[0]
  err = capsys.readouterr().err
  assert err.count("remapped by name") == 1 and "'DESC', 'ENTY', 'ABBR'" in err


def test_class_names_in_the_catalogue_order_load_without_a_note(data_dir):
  datasets.DatasetDict({"train": trec(list(TREC.label_names))}).save_to_disk(
      str(data_dir / "trec"))
  loaded = sources.load_split(TREC, "train")
  assert [e.label for e in loaded.examples] == [2, 0, 3] and loaded.notes == ()


def test_other_class_names_are_an_error_naming_feature_and_both_lists(data_dir):
  names = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUMBER"]
  datasets.DatasetDict({"train": trec(names)}).save_to_disk(str(data_dir / "trec"))
  with pytest.raises(sources.DataSourceError) as info:
    sources.load_split(TREC, "train")
  message = str(info.value)
  assert "dataset 'trec'" in message and "field 'coarse_label'" in message
  assert str(names) in message and "'NUM'" in message


def raft(names, labels):
  features = datasets.Features({"Sentence": datasets.Value("string"), "ID": datasets.Value("int32"),
                                "Label": datasets.ClassLabel(names=names)})
  return datasets.Dataset.from_dict({"Sentence": [f"sentence {i}" for i in range(len(labels))],
                                     "ID": list(range(len(labels))), "Label": labels},
                                    features=features)


def test_raft_unlabeled_class_is_dropped_in_either_position(data_dir):
  (data_dir / "adec").mkdir()
  path = data_dir / "adec" / "train.parquet"
  raft(["Unlabeled", "ADE-related", "not ADE-related"], [1, 2, 0]).to_parquet(str(path))
  loaded = sources.load_split(ADEC, "train")
  assert [e.label for e in loaded.examples] == [0, 1] and loaded.filtered == {"unlabelled": 1}
  pipeline.clear_caches()
  raft(["ADE-related", "not ADE-related", "Unlabeled"], [0, 1, 2]).to_parquet(str(path))
  loaded = sources.load_split(ADEC, "train")
  assert [e.label for e in loaded.examples] == [0, 1] and loaded.filtered == {"unlabelled": 1}
  assert loaded.notes


def test_missing_input_or_label_field_is_an_error_not_a_filter(data_dir):
  write_jsonl(data_dir / "rte" / "train.jsonl",
              [{"premise": "p", "hypothesis": "h", "label": 0}, {"hypothesis": "h", "label": 1}])
  with pytest.raises(sources.DataSourceError,
                     match=r"dataset 'rte' .*split 'train', example 1: missing field 'premise'"):
    sources.load_split(RTE, "train")
  pipeline.clear_caches()
  write_jsonl(data_dir / "rte" / "train.jsonl",
              [{"premise": "p", "hypothesis": "h", "label": 0},
               {"premise": "p", "hypothesis": "h"}])
  with pytest.raises(sources.DataSourceError,
                     match=r"dataset 'rte' .*split 'train', example 1: missing field 'label'$"):
    sources.load_split(RTE, "train")


WINO_ROW = {"sentence": "The trophy does not fit in the suitcase because _ is too big.",
            "option1": "the trophy", "option2": "the suitcase"}


@pytest.mark.parametrize("answers", [[1, 2, 1], [1.0, 2.0, 1.0], ["1", "2", " 1"]])
def test_winogrande_answers_as_ints_floats_or_text(data_dir, answers):
  write_jsonl(data_dir / "winogrande" / "train.jsonl",
              [dict(WINO_ROW, answer=a) for a in answers] + [dict(WINO_ROW, answer="")])
  loaded = sources.load_split(WINOGRANDE, "train")
  assert [e.label for e in loaded.examples] == [0, 1, 0] and loaded.filtered == {"unlabelled": 1}


def test_csv_keeps_na_like_text_and_reads_labels_by_the_rule(data_dir):
  (data_dir / "winogrande").mkdir()
  (data_dir / "winogrande" / "train.csv").write_text(
      "sentence,option1,option2,answer\n"
      "NA is _ .,null,N/A,1\n"
      "_ wins.,007,NaN,2\n"
      "_ is unlabelled.,a,b,\n")
  loaded = sources.load_split(WINOGRANDE, "train")
  assert [e.text for e in loaded.examples] == ["NA is _ .\nnull\nN/A", "_ wins.\n007\nNaN"]
  assert [e.label for e in loaded.examples] == [0, 1] and loaded.filtered == {"unlabelled": 1}


def test_label_rule_is_the_same_for_every_dataset(data_dir):
  wsc = catalogue.get("tune", "wsc")
  rows = [{"text": "t", "span1_text": "a", "span2_text": "b", "label": v}
          for v in (True, False, "True", "true", 1, 0.0, "0")]
  write_jsonl(data_dir / "wsc" / "train.jsonl", rows)
  assert [e.label for e in sources.load_split(wsc, "train").examples] == [1, 0, 1, 1, 1, 0, 0]
  pipeline.clear_caches()
  write_jsonl(data_dir / "wsc" / "train.jsonl", rows[:1] + [dict(rows[0], label=1.5)])
  with pytest.raises(sources.DataSourceError, match="example 1, field 'label': label 1.5 is "
                     r"outside the class list \[0, 1, 'False', 'True'\]"):
    sources.load_split(wsc, "train")


@pytest.mark.parametrize("text,where", [
    ('{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": "p", "label": 1\n',
     "line 2, column"),
    ('{"premise": "p", "hypothesis": "h", "label": 0} trailing\n', "line 1, column"),
])
def test_malformed_json_is_a_clear_error_naming_file_and_line(data_dir, text, where):
  (data_dir / "rte").mkdir()
  (data_dir / "rte" / "train.jsonl").write_text(text)
  with pytest.raises(sources.LocalCopyError) as info:
    sources.load_split(RTE, "train")
  message = str(info.value)
  assert message.startswith(f"dataset 'rte': cannot read {data_dir / 'rte' / 'train.jsonl'}, "
                            f"{where}")
  assert len(message.splitlines()) == 1


def test_two_copies_of_a_split_are_refused(data_dir):
  write_jsonl(data_dir / "rte" / "train.jsonl", [{"premise": "p", "hypothesis": "h", "label": 0}])
  (data_dir / "rte" / "train.csv").write_text("premise,hypothesis,label\np,h,1\n")
  with pytest.raises(sources.LocalCopyError, match="2 copies of split 'train' "
                     r"\(train.jsonl, train.csv\); keep one"):
    sources.load_split(RTE, "train")


def subj_rows(n, sort_by_class=True):
  rows = [{"text": f"sentence {i} about the film", "label": i % 2, "label_text": "x"}
          for i in range(n)]
  return sorted(rows, key=lambda r: r["label"]) if sort_by_class else rows


def test_a_broken_local_copy_is_skipped_without_the_local_copy_hint(data_dir):
  write_jsonl(data_dir / "subj" / "test.jsonl", subj_rows(20))
  (data_dir / "subj" / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": ')
  write_jsonl(data_dir / "teh" / "train.jsonl", subj_rows(20))
  write_jsonl(data_dir / "teh" / "validation.jsonl", subj_rows(20))
  unit_list = suites.units("paper", ["labels"], tasks_filter=["subj", "teh"],
                           input_length=512)
  items, skipped, _ = suites.build_all(unit_list, max_examples=4)
  assert [s.task for s in skipped] == ["subj"]
  assert "train.jsonl, line 2" in skipped[0].reason
  assert "point SYMBOL_TUNING_DATA_DIR" not in skipped[0].reason
  assert {it.task for it in items} == {"teh"} and len(items) == 4


def test_max_examples_is_a_seeded_sample_of_every_class(data_dir):
  write_jsonl(data_dir / "subj" / "test.jsonl", subj_rows(60))  # all 0s, then all 1s
  write_jsonl(data_dir / "subj" / "train.jsonl", subj_rows(40))
  build = suites.units("paper", ["labels"], tasks_filter=["subj"], input_length=512)[0].build
  items, _ = build(0, 10)
  assert len(items) == 10 and {it.gold for it in items} == {0, 1}
  again, _ = build(0, 10)
  other, _ = build(1, 10)
  indices = lambda its: [it.meta["query_index"] for it in its]
  assert indices(again) == indices(items) and indices(other) != indices(items)
  assert suites.query_positions(5, None, "subj", 0) == [0, 1, 2, 3, 4]


def hub_repo(root, repo_id, config, splits, features, rows):
  """A dataset repository laid out as on the hub (parquet shards + README configs)."""
  repo = root / repo_id
  lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
  for split in splits:
    (repo / config).mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        str(repo / config / f"{split}-00000-of-00001.parquet"))
    lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
  (repo / "README.md").write_text("\n".join(lines + ["---", ""]))


def test_export_writes_exactly_the_used_splits_with_class_names(tmp_path, monkeypatch):
  hub = tmp_path / "hub"
  nli = datasets.Features({"premise": datasets.Value("string"),
                           "hypothesis": datasets.Value("string"),
                           "label": datasets.ClassLabel(names=["entailment", "neutral",
                                                               "contradiction"])})
  hub_repo(hub, "nyu-mll/glue", "mnli",
           ["train", "validation_matched", "validation_mismatched", "test_matched"], nli,
           {"premise": ["a", "b"], "hypothesis": ["c", "d"], "label": [0, 2]})
  hub_repo(hub, "CogComp/trec", "default", ["train", "test"],
           trec(OLD_TREC_ORDER).features, trec(OLD_TREC_ORDER).to_dict())
  hub_repo(hub, "SetFit/subj", "default", ["train", "test"],
           datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")}),
           {"text": ["x", "y"], "label": [0, 1]})
  hub_repo(hub, "cardiffnlp/tweet_eval", "hate", ["train"],  # validation missing: fails
           datasets.Features({"text": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["non-hate", "hate"])}),
           {"text": ["x", "y"], "label": [0, 1]})

  def load(entry, split):
    return datasets.load_dataset(str(hub / entry.hf_id), entry.hf_config, split=split)

  out = tmp_path / "export"
  report = hf.export(out, keys=["mnli", "trec", "subj", "teh"], load=load)
  written = {(key, split): rows for key, split, rows, _ in report}
  assert written == {("mnli", "train"): 2, ("trec", "train"): 3, ("subj", "test"): 2,
                     ("subj", "train"): 2, ("teh", "train"): 2, ("teh", "validation"): None}
  assert "Unknown split" in dict(((k, s), r) for k, s, _, r in report)[("teh", "validation")]
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
      "mnli/train.parquet", "subj/test.parquet", "subj/train.parquet", "teh/train.parquet",
      "trec/train.parquet"]
  # The export is a local copy that keeps its class names: TREC's older order is remapped.
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(out))
  loaded = sources.load_split(TREC, "train")
  assert [TREC.labels[e.label] for e in loaded.examples] == ["description", "abbreviation",
                                                             "human"]


def test_hints_name_a_readme_section_that_exists(monkeypatch):
  from symbol_tuning import settings  # pylint: disable=g-import-not-at-top

  headings = [line[3:].strip() for line in
              (settings.REPO_DIR / "README.md").read_text().splitlines()
              if line.startswith("## ")]
  assert hf.README_SECTION == "README, 'Data sources and local copies'"
  assert "Data sources and local copies" in headings
  monkeypatch.delenv("SYMBOL_TUNING_DATA_DIR")
  with monkeypatch.context() as patch, pytest.raises(sources.DataSourceError) as info:
    patch.setattr(hf, "hub_unreachable", lambda: "huggingface.co is unreachable (test)")
    sources.load_split(RTE, "train")
  assert str(info.value).endswith(f"({hf.README_SECTION})")
