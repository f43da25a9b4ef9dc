"""Dataset pins (#20): every HF entry names the hub revision it reads; the loader and the
export pass it to `datasets.load_dataset`; `list` and `export` show it, marked `unpinned`
while it is a branch name rather than a commit sha."""
import json

import pytest

from symbol_tuning import cli
from symbol_tuning.data import catalogue
from symbol_tuning.data.sources import hf

datasets = pytest.importorskip("datasets")

HF_ENTRIES = [e for g in ("tune", "eval") for e in catalogue.load(g) if e.source == "hf"]
ENTRY = {"key": "x", "name": "X", "source": "hf", "hf_id": "org/x", "labels": ["a", "b"]}


def test_every_hf_entry_names_a_revision_and_one_without_is_refused():
  assert len(HF_ENTRIES) == 33 and all(e.hf_revision for e in HF_ENTRIES)
  with pytest.raises(catalogue.CatalogueError) as e:
    catalogue._entry("tune", ENTRY, "tasks/tune.json")  # pylint: disable=protected-access
  assert str(e.value) == ("tasks/tune.json: x: an HF entry names its hf_revision (a commit "
                          "sha, or the branch it follows: README, 'Dataset pins')")
  pinned = catalogue._entry("tune", dict(ENTRY, hf_revision="0123abcd" * 5), "t")  # pylint: disable=protected-access
  branch = catalogue._entry("tune", dict(ENTRY, hf_revision="main"), "t")  # pylint: disable=protected-access
  assert pinned.pinned and not branch.pinned


@pytest.fixture
def fake_hub(monkeypatch):
  """datasets.load_dataset answering every catalogue entry with one valid row, recording
  what it was asked for (the hub itself is out of reach here)."""
  by_id = {(e.hf_id, e.hf_config): e for e in HF_ENTRIES}
  calls = []

  def load_dataset(path, name=None, *, split, revision=None, **kwargs):
    assert not kwargs
    calls.append((path, name, split, revision))
    entry = by_id[(path, name)]
    row = {field: ["some text"] for field in entry.input_fields}
    row[entry.label_field] = [entry.raw_label_values[0]]
    return datasets.Dataset.from_dict(row)

  monkeypatch.setattr(datasets, "load_dataset", load_dataset)
  monkeypatch.setattr(hf, "hub_unreachable", lambda: None)
  monkeypatch.delenv("SYMBOL_TUNING_DATA_DIR", raising=False)
  return calls


def test_the_loader_passes_each_entrys_revision(fake_hub):
  for entry in HF_ENTRIES:
    loaded = hf.load_split(entry, entry.train_split)
    assert fake_hub[-1] == (entry.hf_id, entry.hf_config, entry.train_split, entry.hf_revision)
    assert loaded.origin == f"hf:{entry.hf_id}/{entry.hf_config}@{entry.hf_revision}"
  assert len(fake_hub) == 33


def test_the_export_passes_and_prints_each_revision(fake_hub, tmp_path, capsys):
  report = hf.export(tmp_path)
  assert all(rows == 1 for _, _, rows, _ in report)
  asked = {(path, name, revision) for path, name, _, revision in fake_hub}
  assert asked == {(e.hf_id, e.hf_config, e.hf_revision) for e in HF_ENTRIES}
  err = capsys.readouterr().err
  for entry in HF_ENTRIES:
    for split in hf.used_splits(entry):
      assert (f"{entry.key}/{split} (hf:{entry.hf_id}/{entry.hf_config}@{entry.hf_revision})"
              f": 1 rows -> {tmp_path / entry.key / split}.parquet") in err


def test_list_and_export_show_the_revision(data_dir, tmp_path, capsys):
  (data_dir / "sst2").mkdir()
  rows = [{"sentence": f"a {'good' if i % 2 else 'bad'} film number {i}", "label": i % 2}
          for i in range(24)]
  (data_dir / "sst2" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  where = f"local:{data_dir / 'sst2'} (hub revision main, unpinned)"
  assert cli.main(["list", "--filter", "tune.sst2"]) == 0
  out = capsys.readouterr().out
  assert f"symbol_tuning.tune.sst2" in out and f"24 train; from {where}" in out
  assert cli.main(["list", "--filter", "tune.sst2", "--json"]) == 0
  row = json.loads(capsys.readouterr().out.splitlines()[0])
  assert (row["revision"], row["pinned"]) == ("main", False)
  assert row["origin"] == str(data_dir / "sst2" / "train.jsonl")
  out_file = tmp_path / "prompts.jsonl"
  assert cli.main(["export", "symbol_tuning.tune.sst2", "--num", "3", "--out",
                   str(out_file)]) == 0
  assert capsys.readouterr().err.splitlines()[-1] == f"data: sst2 {where}"
