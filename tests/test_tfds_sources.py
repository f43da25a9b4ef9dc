"""TFDS sources (#20): the catalogue's `tfds` blocks against the installed builders, every
entry read through TFDS's own `mock_data` (features from each builder's code) into prompts,
and TREC prepared by TFDS's real builder from files in the publisher's format (its download
redirected to them), read end to end by README's commands."""
import dataclasses
import json
import pathlib
import re
import shutil
from unittest import mock

import gin
import pytest
import seqio
import tensorflow_datasets as tfds

import readme_support
import symbol_tuning.data.tasks  # noqa: F401  (registers)
from symbol_tuning import cli
from symbol_tuning.data import catalogue, pipeline, prompt_workers, sources
from symbol_tuning.data.sources import tfds_source

TFDS_ENTRIES = [e for e in catalogue.load("tune") if e.tfds]
PLACEHOLDER = "/data/tensorflow_datasets"
# TREC in its publisher's format (cogcomp.org's train_5500.label / TREC_10.label): the
# coarse:fine label, a space, the question. Three questions per coarse class.
TREC_TRAIN = """\
DESC:manner How did serfdom develop in and then leave Russia ?
DESC:def What are liver enzymes ?
DESC:reason Why do heavier objects travel downhill faster ?
ENTY:cremat What films featured the character Popeye Doyle ?
ENTY:animal What fowl grabs the spotlight after the Chinese Year of the Monkey ?
ENTY:event What is considered the costliest disaster the insurance industry has ever faced ?
ABBR:exp What is the full form of .com ?
ABBR:exp What does NASA stand for ?
ABBR:abb What is the abbreviation for Texas ?
HUM:ind What contemptible scoundrel stole the cork from my lunch ?
HUM:gr What team did baseball 's St. Louis Browns become ?
HUM:ind Who killed Gandhi ?
LOC:state What sprawling U.S. state boasts the most airports ?
LOC:city What is the capital of Peru ?
LOC:country What country is the Eiffel Tower in ?
NUM:date When was Ozzy Osbourne born ?
NUM:count How many Jews were executed in concentration camps during WWII ?
NUM:count How many moons does Mars have ?
"""
TREC_TEST = "NUM:dist How far is it from Denver to Aspen ?\n"
TREC = catalogue.get("tune", "trec")


def _natural_label(entry: catalogue.DatasetEntry, tfds_class_name: str) -> str:
  """The catalogue's natural label for a TFDS class name (TREC's LOC -> location)."""
  return entry.labels[list(entry.tfds.label_names or entry.label_names).index(tfds_class_name)]


def test_tfds_has_18_tuning_datasets_and_none_of_the_evaluation_ones():
  assert len(TFDS_ENTRIES) == 18
  assert not [e for e in catalogue.load("eval") if e.tfds]
  builders = set(tfds.list_builders(with_community_datasets=False))
  # The rest (Rotten Tomatoes, TweetEval, SUBJ, RAFT) have no TFDS builder by any name.
  others = [e for g in ("tune", "eval") for e in catalogue.load(g) if not e.tfds]
  assert len(others) == 4 + 11
  names = {n.lower() for e in others for n in (e.hf_id.split("/")[-1], e.hf_config, e.key)}
  assert not names & builders


@pytest.mark.parametrize("entry", TFDS_ENTRIES, ids=lambda e: e.key)
def test_tfds_block_matches_the_installed_builder(entry, tmp_path):
  builder = tfds.builder(entry.tfds.name, data_dir=str(tmp_path))
  name, _, version = entry.tfds.name.partition(":")
  assert builder.info.full_name == f"{name}/{version}"  # builder, config and version
  features = builder.info.features
  for field in (*entry.input_fields, entry.label_field):
    for feature in entry.tfds.features(field):
      assert feature in features, (entry.key, field, feature)
  (label,) = entry.tfds.features(entry.label_field)
  names = features[label].names
  values, note = tfds_source.class_values(entry, entry.tfds, names, "test")
  assert sorted(values, key=str) == sorted(entry.raw_label_values, key=str)
  assert (note is not None) == (entry.key == "trec")  # TFDS orders TREC's classes its own way


def test_mock_data_reads_every_entry_into_prompts_with_the_right_labels(tmp_path):
  sources.select("tfds", str(tmp_path))
  pipeline.clear_caches()
  with tfds.testing.mock_data(num_examples=40):
    for entry in TFDS_ENTRIES:
      builder = tfds.builder(entry.tfds.name, data_dir=str(tmp_path))
      raw = list(tfds.as_numpy(builder.as_dataset(split=entry.tfds.split("train"),
                                                  shuffle_files=False)))
      (label,) = entry.tfds.features(entry.label_field)
      names = builder.info.features[label].names
      loaded = sources.load_split(entry, "train")
      assert loaded.origin == f"tfds:{entry.tfds.name} ({tmp_path})"
      assert len(loaded.examples) + sum(loaded.filtered.values()) == len(raw) == 40
      for example in loaded.examples:
        record = raw[example.index]
        assert entry.labels[example.label] == _natural_label(entry, names[record[label]])
        texts = [" ".join(record[f].decode() for f in entry.tfds.features(field)).strip()
                 for field in entry.input_fields]
        assert example.text == "\n".join(texts)
      # Into prompts (natural labels): the target is the query's label by TFDS's class name.
      spec = seqio.get_mixture_or_task(f"symbol_tuning.instruct.{entry.task_key}").source.spec
      prompt_builder = pipeline.PromptBuilder(spec, "train", None)
      for position in range(3):
        query = prompt_builder.queries[position]
        prompt = prompt_builder.build(position, seed=0)
        assert prompt.targets == _natural_label(entry, names[raw[query.index][label]])
        assert query.text.split("\n")[-1] in prompt.inputs
  pipeline.clear_caches()


def test_class_names_that_are_not_the_catalogues_are_refused(tmp_path):
  paws = catalogue.get("tune", "paws")
  wrong = dataclasses.replace(paws, tfds=dataclasses.replace(paws.tfds, label_names=("0", "1")))
  with tfds.testing.mock_data(num_examples=4), pytest.raises(sources.DataSourceError) as e:
    tfds_source.load_split(wrong, "train", str(tmp_path))
  message = str(e.value)
  assert "\n" not in message and message.startswith("dataset 'paws' (tfds:paws_wiki/")
  assert "['different_meaning', 'paraphrase']" in message and "tfds.label_names" in message


@pytest.fixture(scope="module")
def publisher_files(tmp_path_factory) -> dict[str, str]:
  """TREC's two files as cogcomp.org serves them, by file name."""
  folder = tmp_path_factory.mktemp("cogcomp")
  (folder / "train_5500.label").write_text(TREC_TRAIN, encoding="latin-1")
  (folder / "TREC_10.label").write_text(TREC_TEST, encoding="latin-1")
  return {p.name: str(p) for p in folder.iterdir()}


@pytest.fixture
def redirected_downloads(publisher_files):
  """TFDS's downloads answered from the local publisher files (by URL file name): the real
  builder, its real file parsing and preparation, no network."""
  def download_and_extract(self, urls):
    del self
    return {key: publisher_files[url.rsplit("/", 1)[-1]] for key, url in urls.items()}

  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         download_and_extract):
    yield


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def test_readme_block_prepares_trec_with_its_real_builder_and_reads_it_into_prompts(
    tmp_path, capsys, redirected_downloads):
  block = readme_support.block("Data sources and local copies", 0)
  data_dir = str(tmp_path / "tensorflow_datasets")
  prepare, listing, inspect = block.commands
  argv = prepare.replace(PLACEHOLDER, data_dir).split()
  assert argv[:3] == ["python", "-m", "symbol_tuning.data.sources.tfds_source"]
  assert tfds_source.main(argv[3:]) == 0
  assert (tmp_path / "tensorflow_datasets" / "trec" / "1.0.0" / "dataset_info.json").is_file()
  assert "trec: trec:1.0.0 prepared in" in capsys.readouterr().err

  code, out, err = _run(capsys, readme_support.cli_argv(listing, {PLACEHOLDER: data_dir}))
  assert code == 0
  row = next(line for line in out.splitlines() if "symbol_tuning.instruct.trec " in line)
  assert f"18 train; labels remapped by class name; from tfds:trec:1.0.0" in row
  code, out, err2 = _run(capsys, readme_support.cli_argv(inspect, {PLACEHOLDER: data_dir}))
  assert code == 0
  # TFDS orders TREC's classes DESC, ENTY, ABBR, ...: remapped by name, said once.
  assert (err + err2).count("orders the classes of 'coarse_label'") == 1
  # Every prompt's target is its question's class in the publisher's file, by name.
  truth = {line.split(" ", 1)[1]: line.split(":", 1)[0] for line in TREC_TRAIN.splitlines()}
  loaded = {e.index: e.text for e in sources.load_split(TREC, "train").examples}
  records = [json.loads(line) for line in out.splitlines()]
  assert len(records) == 2
  for record in records:
    question = loaded[record["query_index"]]
    assert record["targets"] == _natural_label(TREC, truth[question])
    assert question in record["inputs"]
  pipeline.clear_caches()


def test_a_missing_data_dir_or_an_unprepared_version_is_one_line(tmp_path, capsys,
                                                                 redirected_downloads):
  missing = tmp_path / "nowhere"
  sources.select("tfds", str(missing))
  with pytest.raises(sources.DataSourceError) as e:
    sources.load_split(TREC, "train")
  message = str(e.value)
  assert "\n" not in message and message.startswith("dataset 'trec': the TFDS data dir")
  assert f"{missing} does not exist" in message
  assert (f"python -m symbol_tuning.data.sources.tfds_source prepare --data_dir {missing} "
          "--keys trec" in message and f"tfds build trec:1.0.0 --data_dir={missing}" in message)

  data_dir = tmp_path / "tfds"
  assert tfds_source.main(["prepare", "--data_dir", str(data_dir), "--keys", "trec"]) == 0
  newer = dataclasses.replace(TREC, tfds=dataclasses.replace(TREC.tfds, name="trec:1.0.1"))
  with pytest.raises(sources.DataSourceError) as e:
    tfds_source.load_split(newer, "train", str(data_dir))
  assert str(e.value) == (
      f"dataset 'trec': TFDS trec:1.0.1 is not prepared in {data_dir} (prepared there: 1.0.0);"
      f" run `python -m symbol_tuning.data.sources.tfds_source prepare --data_dir {data_dir} "
      f"--keys trec` (or `tfds build trec:1.0.1 --data_dir={data_dir}`) (README, 'TFDS "
      "sources')")
  # From the command line: one line, exit status 2; `list` shows the task as unavailable.
  capsys.readouterr()
  code, _, err = _run(capsys, ["--source", "tfds", "--tfds_data_dir", str(tmp_path / "empty"),
                               "inspect", "symbol_tuning.tune.sst2", "--num", "1"])
  assert code == 2 and err.count("\n") == 1
  assert err.startswith("symbol-tuning inspect: error: dataset 'sst2': the TFDS data dir")
  pipeline.clear_caches()


def test_the_gin_binding_and_the_environment_select_tfds(monkeypatch, clean_gin):
  del clean_gin
  assert sources.selection() == sources.Selection("hf", None)
  monkeypatch.setenv("SYMBOL_TUNING_DATA_SOURCE", "tfds")
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/tensorflow_datasets")
  assert sources.selection() == sources.Selection("tfds", "gs://bucket/tensorflow_datasets")
  # gin (as gin/t5x/symbol_tuning.gin binds it) over the CLI's choice over the environment.
  sources.select("hf", "/local/tfds")
  assert sources.selection() == sources.Selection("hf", "/local/tfds")
  gin.parse_config("""
      from __gin__ import dynamic_registration
      import symbol_tuning.data.sources
      symbol_tuning.data.sources.selection.source = 'tfds'
  """)
  assert sources.selection() == sources.Selection("tfds", "/local/tfds")
  monkeypatch.setenv("SYMBOL_TUNING_DATA_SOURCE", "tfsd")
  gin.clear_config()
  sources.select()
  with pytest.raises(ValueError, match=r"data source 'tfsd': expected one of hf, tfds"):
    sources.selection()


def test_gin_files_bind_the_data_source(clean_gin):
  del clean_gin
  gin_dir = pathlib.Path(__file__).resolve().parent.parent / "gin"
  for path in ("t5x/symbol_tuning.gin", "local/runs/finetune.gin"):
    text = (gin_dir / path).read_text()
    assert "symbol_tuning.data.sources.selection.source = %DATA_SOURCE" in text
    assert "DATA_SOURCE = None" in text
  # `symbol-tuning train --gin.DATA_SOURCE="'tfds'"`: the macro is used, and selects TFDS.
  from symbol_tuning.commands import train  # pylint: disable=import-outside-toplevel
  from symbol_tuning.training import trainer  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  bindings = ["DATA_SOURCE = 'tfds'"]
  gin.parse_config_files_and_bindings([str(gin_dir / "local/runs/finetune.gin")], bindings,
                                      finalize_config=False)
  train.check_macros(bindings)
  assert sources.selection() == sources.Selection("tfds", None)


def test_prompt_workers_are_handed_what_this_process_read_from_tfds(tmp_path, monkeypatch):
  """Workers import no TensorFlow, so they cannot read TFDS: this process hands them the
  splits it read, and their prompts are this process's, with the data folder gone."""
  data_dir = tmp_path / "tfds"
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      lambda self, urls: {k: str(tmp_path / u.rsplit("/", 1)[-1])
                                          for k, u in urls.items()})
  (tmp_path / "train_5500.label").write_text(TREC_TRAIN)
  (tmp_path / "TREC_10.label").write_text(TREC_TEST)
  assert tfds_source.main(["prepare", "--data_dir", str(data_dir), "--keys", "trec"]) == 0
  sources.select("tfds", str(data_dir))
  pipeline.clear_caches()
  task = seqio.get_mixture_or_task("symbol_tuning.instruct.trec")

  def prompts():
    ds = task.get_dataset({"inputs": 512, "targets": 16}, split="train", shuffle=True, seed=3)
    return [(ex["inputs_pretokenized"], ex["targets_pretokenized"])
            for ex in ds.take(6).as_numpy_iterator()]

  monkeypatch.setenv("SYMBOL_TUNING_PROMPT_WORKERS", "0")
  in_process = prompts()
  shutil.rmtree(data_dir)  # a worker reading TFDS itself would fail now
  monkeypatch.setenv("SYMBOL_TUNING_PROMPT_WORKERS", "1")
  assert prompts() == in_process
  assert len(prompt_workers.worker_pids()) == 1
  pipeline.clear_caches()


def test_a_malformed_tfds_block_is_refused_when_the_catalogue_is_read():
  raw = {"key": "x", "name": "X", "source": "hf", "hf_id": "org/x", "hf_revision": "main",
         "labels": ["a", "b"]}
  for tfds_block, problem in (
      ({"name": "glue/sst2"}, "must be name[/config]:X.Y.Z (a pinned version)"),
      ({"name": "glue/sst2:2.0.0", "fields": {"label": ["a", "b"]}},
       "must map the label field 'label' to one feature"),
      ({"name": "glue/sst2:2.0.0", "label_names": ["a"]}, "tfds label_names must match labels"),
      ({"name": "glue/sst2:2.0.0", "feature": {}}, "'tfds' has unknown fields ['feature']")):
    with pytest.raises(catalogue.CatalogueError, match=re.escape(problem)):
      catalogue._entry("tune", dict(raw, tfds=tfds_block), "t")  # pylint: disable=protected-access


def test_names_prints_the_pinned_tfds_names(capsys):
  assert tfds_source.main(["names"]) == 0
  names = capsys.readouterr().out.split()
  assert names == [e.tfds.name for e in TFDS_ENTRIES] and len(names) == 18
  assert "glue/sst2:2.0.0" in names and "paws_wiki/labeled_final_tokenized:1.1.0" in names
  assert tfds_source.main(["names", "--keys", "trec,nope"]) == 2
  assert "no TFDS entry ['nope']" in capsys.readouterr().err


def test_the_sections_the_messages_name_exist():
  readme = pathlib.Path(readme_support.README).read_text(encoding="utf-8").splitlines()
  for section in ("TFDS sources", "Dataset pins"):
    assert f"### {section}" in readme
  assert tfds_source.README_SECTION == "README, 'TFDS sources'"


def test_t5x_tfds_data_dir_wins_as_in_seqio(tmp_path):
  """t5x.train hands --tfds_data_dir to seqio (set_tfds_data_dir_override), which prefers it
  to a data_dir a source names: the folder read and reported is that one."""
  assert tfds_source.data_dir_in_use("/from/our/option") == "/from/our/option"
  seqio.set_tfds_data_dir_override(str(tmp_path))
  try:
    assert tfds_source.data_dir_in_use("/from/our/option") == str(tmp_path)
    with pytest.raises(sources.DataSourceError, match=f"TFDS trec:1.0.0 is not prepared in "
                       f"{tmp_path} \\(none prepared there\\)"):
      tfds_source.load_split(TREC, "train", "/from/our/option")
  finally:
    seqio.set_tfds_data_dir_override(None)
