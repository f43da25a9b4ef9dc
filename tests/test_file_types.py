"""Local copies keep the types written in them (#25): a text field is the text the file
holds, a non-text value in one is a one-line error, and a byte-order mark changes nothing.

`datasets.load_dataset("json")` typed a column by its content: one number among TweetEval
hate's tweets made the column JSON, which stripped the quotes off tweets that are quoted
strings (7 in the real train file) and would read `123`, `true` and `null` as values."""
import json
import re

import pytest

from symbol_tuning import cli
from symbol_tuning.data import catalogue, pipeline, sources

datasets = pytest.importorskip("datasets")

TEH = catalogue.get("eval", "teh")  # TweetEval hate: text, label 0 (non-hate) / 1 (hate)
ADEC = catalogue.get("eval", "adec")  # RAFT ade_corpus_v2: Sentence, ID, Label 1 / 2 (0 unlabelled)
WINOGRANDE = catalogue.get("tune", "winogrande")
# Tweets as TweetEval writes them: some are quoted strings, some look like JSON values.
TWEETS = ['"@user you are not a real fan"', '"Send them all back"', "123", "true", "null",
          "12345", "[1, 2]", "  spaced  ", "plain tweet about #immigration"]
README_HINT = "README, 'Data sources and local copies'"


pytestmark = pytest.mark.usefixtures("data_dir")  # conftest: a fresh local-copy folder


def write(path, text, encoding="utf-8"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text.encode(encoding))
  return path


def tweet_lines(texts):
  return "".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts))


@pytest.mark.parametrize("name,text", [
    ("train.jsonl", tweet_lines(TWEETS)),
    ("train.json", json.dumps([{"text": t, "label": i % 2} for i, t in enumerate(TWEETS)])),
    ("train.csv", "text,label\n" + "".join(
        '"' + t.replace('"', '""') + f'",{i % 2}\n' for i, t in enumerate(TWEETS))),
])
@pytest.mark.parametrize("bom", [False, True], ids=["", "bom"])
def test_texts_are_read_exactly_as_written(data_dir, name, text, bom):
  write(data_dir / "teh" / name, ("\ufeff" if bom else "") + text)
  loaded = sources.load_split(TEH, "train")
  assert [e.text for e in loaded.examples] == [t.strip() for t in TWEETS]
  assert [e.label for e in loaded.examples] == [i % 2 for i in range(len(TWEETS))]
  assert loaded.num_records == len(TWEETS) and loaded.filtered == {}


def test_json_lines_end_at_newlines_only(data_dir):
  # Written raw (ensure_ascii=False), a line separator or NEL is part of the tweet.
  texts = ["one\u2028two", "three\x85four"]
  write(data_dir / "teh" / "train.jsonl", "\r\n".join(
      json.dumps({"text": t, "label": 0}, ensure_ascii=False) for t in texts) + "\r\n")
  assert [e.text for e in sources.load_split(TEH, "train").examples] == texts


def test_one_number_among_the_tweets_is_an_error_not_a_retyped_column(data_dir):
  path = write(data_dir / "teh" / "train.jsonl", tweet_lines(TWEETS[:3]) +
               json.dumps({"text": 12345, "label": 1}) + "\n" + tweet_lines(TWEETS[3:]))
  with pytest.raises(sources.DataSourceError) as info:
    sources.load_split(TEH, "train")
  assert str(info.value) == (
      f"dataset 'teh' ({path}), split 'train', example 3, field 'text': a number (12345), "
      f"not text; input fields are text (a JSON string, e.g. \"12345\"; {README_HINT})")


@pytest.mark.parametrize("value,kind", [(True, "a boolean (True)"), (1.5, "a number (1.5)"),
                                        (["a"], "a list (['a'])"), ({"a": 1}, "an object")])
def test_other_non_text_values_name_their_kind(data_dir, value, kind):
  write(data_dir / "teh" / "train.jsonl", json.dumps({"text": value, "label": 0}) + "\n")
  with pytest.raises(sources.DataSourceError,
                     match=re.escape(f"split 'train', example 0, field 'text': {kind}")):
    sources.load_split(TEH, "train")


def test_a_null_text_is_a_missing_field(data_dir):
  path = write(data_dir / "teh" / "train.jsonl", json.dumps({"text": None, "label": 0}) + "\n")
  with pytest.raises(sources.DataSourceError) as info:
    sources.load_split(TEH, "train")
  assert str(info.value) == (f"dataset 'teh' ({path}), split 'train', example 0: missing "
                             "field 'text' (has ['label'])")


@pytest.mark.parametrize("fmt", ["parquet", "save_to_disk"])
def test_typed_copies_with_a_numeric_text_column_are_refused(data_dir, fmt):
  ds = datasets.Dataset.from_dict({"text": [7, 8], "label": [0, 1]})
  if fmt == "parquet":
    (data_dir / "teh").mkdir()
    ds.to_parquet(str(data_dir / "teh" / "train.parquet"))
  else:
    ds.save_to_disk(str(data_dir / "teh"))
  with pytest.raises(sources.DataSourceError, match=r"split 'train', example 0, field 'text': "
                     r"a number \(7\), not text"):
    sources.load_split(TEH, "train")


RAFT_CSV = ('Sentence,ID,Label\n'
            '"Intravenous azithromycin-induced ototoxicity.",0,1\n'
            '"Immobilization, while Paget\'s bone disease was present, may cause hypercalcemia.",1,2\n'
            '"NA",2,2\n')


def test_csv_with_a_byte_order_mark_reads_as_without(data_dir):
  write(data_dir / "adec" / "train.csv", RAFT_CSV)
  plain = sources.load_split(ADEC, "train")
  pipeline.clear_caches()
  write(data_dir / "adec" / "train.csv", "\ufeff" + RAFT_CSV)
  with_bom = sources.load_split(ADEC, "train")
  assert with_bom.examples == plain.examples
  assert [e.text for e in plain.examples] == [
      "Intravenous azithromycin-induced ototoxicity.",
      "Immobilization, while Paget's bone disease was present, may cause hypercalcemia.", "NA"]
  assert [e.label for e in plain.examples] == [0, 1, 1]


def test_a_json_array_with_a_byte_order_mark_reads_as_without(data_dir):
  rows = [{"sentence": "_ wins.", "option1": "a", "option2": "b", "answer": "2"}]
  write(data_dir / "winogrande" / "train.json", "\ufeff" + json.dumps(rows, indent=2))
  (example,) = sources.load_split(WINOGRANDE, "train").examples
  assert example.text == "_ wins.\na\nb" and example.label == 1


@pytest.mark.parametrize("name,data,where", [
    ("train.csv", "text,label\na,0\nb,1,extra\n".encode(),
     "line 3: 3 fields, but the header has 2 (['text', 'label'])"),
    ("train.csv", "text,label\n\"multi\nline\",0\nc\n".encode(),
     "line 4: 1 fields, but the header has 2 (['text', 'label'])"),
    ("train.csv", "text,text\na,0\n".encode(), "line 1: the header names column 'text' twice"),
    ("train.csv", "text,label\na,0\ncaf\xe9,1\n".encode("latin-1"),
     "line 3: not UTF-8 text (byte 0xe9 at offset 18)"),
    ("train.jsonl", b'{"text": "a", "label": 0}\n{"text": "caf\xe9", "label": 1}\n',
     "line 2: not UTF-8 text (byte 0xe9 at offset 39); save the file as UTF-8"),
    ("train.jsonl", b'\xef\xbb\xbf{"text": "a", "label": 0}\n{"text": "caf\xe9", "label": 1}\n',
     "line 2: not UTF-8 text (byte 0xe9 at offset 42); save the file as UTF-8"),
    ("train.jsonl", b'{"text": "a", "label": 0}\n["b", 1]\n',
     "line 2: a JSON array, not an object (a record)"),
    ("train.json", b'{\n  "data": [{"text": "a", "label": 0}]\n}\n',
     "line 1: one JSON object, not an array of records or one record per line"),
    ("train.json", b'[{"text": "a", "label": 0},\n {"text": "b" "label": 1}]',
     "line 2, column 15: Expecting ',' delimiter"),
])
def test_unreadable_files_name_the_line(data_dir, name, data, where):
  (data_dir / "teh").mkdir()
  path = data_dir / "teh" / name
  path.write_bytes(data)
  with pytest.raises(sources.LocalCopyError) as info:
    sources.load_split(TEH, "train")
  assert str(info.value).startswith(f"dataset 'teh': cannot read {path}, {where}")
  assert len(str(info.value).splitlines()) == 1


def test_typed_copies_are_read_without_datasets_progress_bars(data_dir, capfd):
  ds = datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]})
  (data_dir / "teh").mkdir()
  ds.to_parquet(str(data_dir / "teh" / "train.parquet"))
  ds.save_to_disk(str(data_dir / "subj"))
  capfd.readouterr()
  assert len(sources.load_split(TEH, "train").examples) == 2
  assert len(sources.load_split(catalogue.get("eval", "subj"), "train").examples) == 2
  err = capfd.readouterr().err
  assert "Generating" not in err and "it/s" not in err and err == ""


def test_cli_reports_a_numeric_tweet_in_one_line(data_dir, capsys):
  path = write(data_dir / "teh" / "train.jsonl",
               tweet_lines(TWEETS[:2]) + json.dumps({"text": 12345, "label": 1}) + "\n")
  write(data_dir / "teh" / "validation.jsonl", tweet_lines(TWEETS))
  code = cli.main(["inspect", "symbol_tuning.eval.teh.labels", "--split", "validation"])
  err = capsys.readouterr().err
  assert code == 2
  assert err.strip() == (
      f"symbol-tuning inspect: error: dataset 'teh' ({path}), split 'train', example 2, field "
      f"'text': a number (12345), not text; input fields are text (a JSON string, e.g. "
      f"\"12345\"; {README_HINT})")
