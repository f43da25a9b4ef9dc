"""Data on gs:// against a GCS server on localhost (tests/gcs_support.py): local copies of HF
datasets (SYMBOL_TUNING_DATA_DIR) in every format and BIG-bench tasks (BIGBENCH_DIR) read
from the server give exactly the prompts of the same files on disk (README's data-on-gs://
block), `export --out gs://...` writes the bytes of the local export, a missing bucket
(data folders, export's and demo's --out) or no credentials is one line, and the
TensorBoard staging folder of a gs:// run is removed."""
import gc
import json
import os
import shlex
import shutil
import time

import pytest

import gcs_support
import readme_support
from gcs_support import gcs  # noqa: F401  (the emulator fixture)
from symbol_tuning import cli, paths
from symbol_tuning.data import catalogue, pipeline, sources
from symbol_tuning.data.sources import hf
from symbol_tuning.training import summaries

datasets = pytest.importorskip("datasets")

# One tuning dataset per format a local copy may have, and one BIG-bench task.
TASKS = ("symbol_tuning.tune.rte", "symbol_tuning.tune.sst2", "symbol_tuning.tune.trec",
         "symbol_tuning.tune.ag_news", "symbol_tuning.bigbench.hyperbaton")
BIGBENCH_TASK = "hyperbaton"
ROWS = 40


def _rows(key: str) -> dict:
  """ROWS columns of catalogue entry `key`: distinct texts, labels cycling over the classes."""
  entry = catalogue.get("tune", key)
  values = entry.raw_label_values
  columns = {f: [f"{key} {f} {i} \"quoted\" é" for i in range(ROWS)] for f in entry.input_fields}
  columns[entry.label_field] = [values[i % len(values)] for i in range(ROWS)]
  return columns


def _write_copies(root) -> None:
  """rte as JSON Lines, sst2 as CSV, trec as parquet (its classes in another order than the
  catalogue's: remapped by name), ag_news as a save_to_disk folder."""
  rte = _rows("rte")
  (root / "rte").mkdir(parents=True)
  (root / "rte" / "train.jsonl").write_text("".join(
      json.dumps({k: v[i] for k, v in rte.items()}) + "\n" for i in range(ROWS)))
  sst2 = _rows("sst2")
  (root / "sst2").mkdir()
  (root / "sst2" / "train.csv").write_text("sentence,label\n" + "".join(
      f'"{s.replace(chr(34), chr(34) * 2)}",{label}\n'
      for s, label in zip(sst2["sentence"], sst2["label"])), encoding="utf-8")
  trec = _rows("trec")
  order = ["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"]
  names = list(catalogue.get("tune", "trec").label_names)
  trec["coarse_label"] = [order.index(names[v]) for v in trec["coarse_label"]]
  (root / "trec").mkdir()
  datasets.Dataset.from_dict(trec, features=datasets.Features(
      {"text": datasets.Value("string"), "coarse_label": datasets.ClassLabel(names=order)})
  ).to_parquet(str(root / "trec" / "train.parquet"))
  datasets.DatasetDict({"train": datasets.Dataset.from_dict(_rows("ag_news"))}).save_to_disk(
      str(root / "ag_news"))


def _export(capsys, argv: list[str], out: str) -> str:
  """stderr of `symbol-tuning <argv> --out out` with tiny settings, which must succeed."""
  pipeline.clear_caches()  # the data folders moved
  code = cli.main(argv + ["--num", "12", "--input_length", "512", "--out", out])
  err = capsys.readouterr().err
  assert code == 0, err
  return err


def _readme_block(monkeypatch) -> list[str]:
  """README's data-on-gs:// block with its bucket on the server: its `export VAR=...` lines
  set (monkeypatch), its symbol-tuning commands returned."""
  block = readme_support.block("Cloud TPU", 2)
  commands = [c.replace("gs://my-bucket", "gs://bkt") for c in block.commands]
  for command in [c for c in commands if c.startswith("export ")]:
    name, value = shlex.split(command, comments=True)[1].split("=", 1)
    monkeypatch.setenv(name, value)
  return [c for c in commands if c.startswith("symbol-tuning ")]


def test_data_copies_and_bigbench_on_gcs_give_the_local_prompts(gcs, tmp_path, monkeypatch,
                                                                capsys, bigbench_dir):
  local_data, local_bigbench = tmp_path / "data", tmp_path / "bigbench"
  _write_copies(local_data)
  shutil.copytree(bigbench_dir / BIGBENCH_TASK, local_bigbench / BIGBENCH_TASK)
  (export,) = _readme_block(monkeypatch)
  remote = {k: os.environ[k] for k in ("SYMBOL_TUNING_DATA_DIR", "BIGBENCH_DIR")}
  assert all(v.startswith("gs://bkt/") for v in remote.values())
  paths.upload_dir(str(local_data), remote["SYMBOL_TUNING_DATA_DIR"])
  paths.upload_dir(str(local_bigbench), remote["BIGBENCH_DIR"])
  assert "symbol_tuning/data/ag_news/train/dataset_info.json" in gcs.objects("bkt", "symbol_tuning/")
  try:
    for task in TASKS:
      name = task.split(".")[-1]
      monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", str(local_data))
      monkeypatch.setenv("BIGBENCH_DIR", str(local_bigbench))
      _export(capsys, ["export", task], str(tmp_path / f"{name}.jsonl"))
      for key, value in remote.items():
        monkeypatch.setenv(key, value)
      err = _export(capsys, ["export", task], f"gs://bkt/out/{name}.jsonl")
      assert f"wrote 12 prompts of {task} (train) to gs://bkt/out/{name}.jsonl\n" in err
      local = (tmp_path / f"{name}.jsonl").read_bytes()
      assert local.count(b"\n") == 12
      assert paths.path(f"gs://bkt/out/{name}.jsonl").read_bytes() == local, task
    # README's export command as written (its --out), tiny settings appended.
    argv = readme_support.cli_argv(export)
    out = argv[argv.index("--out") + 1]
    assert argv[:2] == ["export", TASKS[0]] and out.startswith("gs://bkt/")
    _export(capsys, argv[:argv.index("--out")], out)
    assert paths.path(out).read_bytes() == (tmp_path / "rte.jsonl").read_bytes()
  finally:
    pipeline.clear_caches()
  # The records came from the copies: the CSV's quotes and the non-ASCII text survived.
  record = json.loads((tmp_path / "sst2.jsonl").read_text().splitlines()[0])
  assert 'sst2 sentence' in record["inputs"] and '"quoted" é' in record["inputs"]
  assert not os.path.exists("gs:")


def test_hf_export_to_gcs_is_the_local_export(gcs, tmp_path, monkeypatch):
  """`python -m symbol_tuning.data.sources.hf export --out gs://...` writes the parquet
  bytes of a local export, and SYMBOL_TUNING_DATA_DIR pointed at it reads the same rows."""
  copies = tmp_path / "copies"
  _write_copies(copies)
  load = lambda entry, split: datasets.load_from_disk(str(copies / "ag_news"))[split]  # noqa: E731
  hf.export(tmp_path / "export", keys=["ag_news"], load=load)
  report = hf.export("gs://bkt/export", keys=["ag_news"], load=load)
  assert report == [("ag_news", "train", ROWS, "gs://bkt/export/ag_news/train.parquet")]
  assert paths.path("gs://bkt/export/ag_news/train.parquet").read_bytes() == \
      (tmp_path / "export" / "ag_news" / "train.parquet").read_bytes()
  entry = catalogue.get("tune", "ag_news")
  try:
    loaded = {}
    for where in (str(tmp_path / "export"), "gs://bkt/export"):
      monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", where)
      pipeline.clear_caches()
      loaded[where] = sources.load_split(entry, "train")
  finally:
    pipeline.clear_caches()
  local, remote = loaded.values()
  assert remote.examples == local.examples and len(local.examples) == ROWS
  assert remote.origin == "gs://bkt/export/ag_news/train.parquet"


def _errors(capsys, command: str = "export") -> list[str]:
  """The CLI's error lines; stderr holds no traceback (gcsfs may log warnings there)."""
  err = capsys.readouterr().err
  assert "Traceback" not in err, err[-3000:]
  return [line for line in err.splitlines()
          if line.startswith(f"symbol-tuning {command}: error: ")]


@pytest.mark.parametrize("variable,argv", [
    ("SYMBOL_TUNING_DATA_DIR", ["export", "symbol_tuning.tune.rte"]),
    ("BIGBENCH_DIR", ["export", "symbol_tuning.bigbench.hyperbaton"]),
    ("--out", ["export", "symbol_tuning.bigbench.hyperbaton"]),
    ("demo --out", ["demo", "--steps", "1"])])
def test_missing_bucket_is_one_line(gcs, tmp_path, monkeypatch, capsys, variable, argv):
  if "--out" in variable:
    where, problem = "gs://no-such-bucket/out", "cannot be written"
    out = where if argv[0] == "demo" else f"{where}/prompts.jsonl"
  else:
    where, problem, out = "gs://no-such-bucket/copies", "cannot be read", str(tmp_path / "out")
    monkeypatch.setenv(variable, where)
  try:
    pipeline.clear_caches()
    assert cli.main(argv + ["--out", out]) == 2
  finally:
    pipeline.clear_caches()
  err = _errors(capsys, argv[0])
  assert len(err) == 1 and f"{variable} {where}: {problem} (FileNotFoundError: bucket " \
         "gs://no-such-bucket does not exist" in err[0], err
  assert gcs.objects("bkt") == []


def test_no_credentials_is_one_line_within_the_timeout(tmp_path, monkeypatch, capsys):
  """No emulator and no credentials (the real endpoint cannot answer here): the data
  folder's check gives up after SYMBOL_TUNING_STORAGE_TIMEOUT with one line."""
  for key in list(os.environ):
    if key.startswith(("STORAGE_EMULATOR", "TENSORSTORE_GCS", "GOOGLE_")):
      monkeypatch.delenv(key)
  monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
  monkeypatch.setenv("EPATH_USE_TF", "false")  # as the other gs:// tests: gcsfs
  monkeypatch.setenv("SYMBOL_TUNING_STORAGE_TIMEOUT", "3")
  monkeypatch.setenv("SYMBOL_TUNING_DATA_DIR", "gs://bkt/data")
  gcs_support.forget_clients()
  try:
    pipeline.clear_caches()
    start = time.time()
    assert cli.main(["export", "symbol_tuning.tune.rte", "--num", "2", "--out",
                     str(tmp_path / "out.jsonl")]) == 2
    took = time.time() - start
  finally:
    pipeline.clear_caches()
    gcs_support.forget_clients()
  err = _errors(capsys)
  assert len(err) == 1 and err[0].startswith(
      "symbol-tuning export: error: dataset 'rte', split 'train': SYMBOL_TUNING_DATA_DIR "
      "gs://bkt/data: cannot be read ("), err
  assert took < 30, took
  print(f"no credentials: {took:.1f} s, {err[0]}")


def test_tensorboard_staging_folder_is_removed(gcs):
  """Closed: events uploaded, staging gone. Never closed (a run that failed): gone when the
  writer is collected (or at exit: weakref.finalize)."""
  writer = summaries.UploadedWriter("gs://bkt/tb")
  staging = writer.staging_dir
  writer.write_scalars(1, {"loss": 1.0})
  writer.close()
  assert not os.path.exists(staging)
  assert [n.split("/")[1][:20] for n in gcs.objects("bkt", "tb/")] == ["events.out.tfevents."]

  def failing_run():
    run_writer = summaries.UploadedWriter("gs://bkt/tb_failed")
    run_writer.write_scalars(1, {"loss": 1.0})
    raise RuntimeError(run_writer.staging_dir)

  with pytest.raises(RuntimeError) as info:
    failing_run()
  staging = str(info.value)
  assert os.path.isdir(staging)  # the traceback still holds the writer
  del info
  gc.collect()
  assert not os.path.exists(staging)
