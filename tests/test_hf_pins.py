"""`python -m symbol_tuning.data.sources.hf pin` (#20): branch revisions resolved to commit
shas through huggingface_hub's own client, against a local HTTP server that answers the
hub's dataset-info API, on a copy of tasks/."""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

import readme_support
from symbol_tuning import settings
from symbol_tuning.data import catalogue

HF_ENTRIES = [e for g in ("tune", "eval") for e in catalogue.load(g) if e.source == "hf"]
MISSING = "nobody/no-such-dataset"


def sha_of(repo: str, revision: str) -> str:
  return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


@pytest.fixture(scope="module")
def hub():
  """A hub at http://127.0.0.1:PORT answering GET /api/datasets/{repo}/revision/{rev} for
  the catalogue's repos (a sha derived from repo and revision), 404 RepoNotFound otherwise,
  as the hub does; yields (endpoint, requests seen)."""
  known = {e.hf_id for e in HF_ENTRIES}
  seen = []

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      path = urllib.parse.urlparse(self.path).path
      repo, _, revision = path.removeprefix("/api/datasets/").partition("/revision/")
      revision = urllib.parse.unquote(revision)
      if path.startswith("/api/datasets/"):  # (the client asks other things of its own)
        seen.append((repo, revision))
      if repo in known and revision:
        status, body, headers = 200, {"id": repo, "sha": sha_of(repo, revision)}, {}
      else:
        status, body = 404, {"error": "Repository not found"}
        headers = {"X-Error-Code": "RepoNotFound"}
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      for name, value in headers.items():
        self.send_header(name, value)
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):  # quiet
      del args

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}", seen
  server.shutdown()
  thread.join()


def copy_tasks(tmp_path):
  copy = tmp_path / "tasks"
  shutil.copytree(settings.catalogue_dir(), copy)
  return copy


def readme_pin(index: int) -> list[str]:
  """The arguments after `pin` of README's command `index` (Dataset pins: --check, all,
  --dataset rte --dataset cola)."""
  command = readme_support.block("Data sources and local copies", 1).commands[index]
  words = command.split("#")[0].split()
  assert words[:4] == ["python", "-m", "symbol_tuning.data.sources.hf", "pin"], command
  return words[4:]


def run_pin(endpoint, *args):
  """The command as a user runs it, the hub's offline switches unset."""
  env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
  env.update(HF_ENDPOINT=endpoint, PYTHONWARNINGS="ignore::RuntimeWarning")
  return subprocess.run([sys.executable, "-m", "symbol_tuning.data.sources.hf", "pin", *args],
                        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_pin_writes_each_branchs_sha_in_place_and_list_and_export_show_it(
    hub, tmp_path, monkeypatch):
  endpoint, seen = hub
  copy = copy_tasks(tmp_path)
  before = {p.name: p.read_text() for p in copy.glob("*.json")}
  seen.clear()
  proc = run_pin(endpoint, *readme_pin(1), "--tasks-dir", str(copy))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert sorted(seen) == sorted((e.hf_id, e.hf_revision) for e in HF_ENTRIES)
  assert proc.stdout.splitlines()[-1] == ("pin: 33 of 33 branch revisions resolved, 33 "
                                          "written; 0 already pinned")
  # Only the revisions changed: same lines, each changed line differs in its hf_revision.
  by_key = {e.key: e for e in HF_ENTRIES}
  changed = 0
  for name, text in before.items():
    new = (copy / name).read_text()
    for old_line, new_line in zip(text.splitlines(), new.splitlines(), strict=True):
      if old_line == new_line:
        continue
      entry = by_key[json.loads(old_line.strip().rstrip(","))["key"]]
      sha = sha_of(entry.hf_id, entry.hf_revision)
      assert new_line == old_line.replace(f'"hf_revision": "{entry.hf_revision}"',
                                          f'"hf_revision": "{sha}"')
      changed += 1
  assert changed == 33 and (copy / "bigbench.json").read_text() == before["bigbench.json"]
  # Run again: nothing left to pin; --check agrees.
  proc = run_pin(endpoint, *readme_pin(0), "--tasks-dir", str(copy))
  assert (proc.returncode, proc.stdout.splitlines()) == (0, [
      "pin: 0 of 0 branch revisions resolved, 0 written; 33 already pinned"])

  # The catalogue read from the copy: every entry pinned, `list` and `export` unmarked.
  (tmp_path / "data" / "sst2").mkdir(parents=True)
  rows = [{"sentence": f"a {'good' if i % 2 else 'bad'} film number {i}", "label": i % 2}
          for i in range(24)]
  (tmp_path / "data" / "sst2" / "train.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  monkeypatch.setenv("SYMBOL_TUNING_CATALOGUE_DIR", str(copy))
  catalogue.load.cache_clear()
  try:
    assert all(e.pinned for g in ("tune", "eval") for e in catalogue.load(g) if e.source == "hf")
  finally:
    monkeypatch.delenv("SYMBOL_TUNING_CATALOGUE_DIR")
    catalogue.load.cache_clear()
  sst2 = by_key["sst2"]
  sha = sha_of(sst2.hf_id, sst2.hf_revision)
  script = ("from symbol_tuning import cli; import sys; "
            "rc = cli.main(['list', '--filter', 'tune.sst2', '--json']); "
            f"sys.exit(rc or cli.main(['export', 'symbol_tuning.tune.sst2', '--num', '2', "
            f"'--out', {str(tmp_path / 'prompts.jsonl')!r}]))")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=300, check=False,
                        env=dict(os.environ, SYMBOL_TUNING_CATALOGUE_DIR=str(copy),
                                 SYMBOL_TUNING_DATA_DIR=str(tmp_path / "data")))
  assert proc.returncode == 0, proc.stderr[-2000:]
  row = json.loads(proc.stdout.splitlines()[0])
  assert (row["revision"], row["pinned"]) == (sha, True)
  assert proc.stderr.splitlines()[-1] == (
      f"data: sst2 local:{tmp_path / 'data' / 'sst2'} (hub revision {sha})")


def test_an_unknown_repo_is_one_line_naming_the_dataset_and_the_rest_are_pinned(hub, tmp_path):
  endpoint, _ = hub
  copy = copy_tasks(tmp_path)
  tune = copy / "tune.json"
  text = tune.read_text()
  assert text.count('"hf_id": "nyu-mll/glue", "hf_config": "cola"') == 1
  tune.write_text(text.replace('"hf_id": "nyu-mll/glue", "hf_config": "cola"',
                               f'"hf_id": "{MISSING}", "hf_config": "cola"'))
  proc = run_pin(endpoint, *readme_pin(2), "--tasks-dir", str(copy))
  assert proc.returncode == 1
  lines = proc.stdout.splitlines()
  rte = catalogue.get("tune", "rte")
  assert lines == [
      f"rte: aps/super_glue@refs/convert/parquet -> {sha_of(rte.hf_id, rte.hf_revision)}",
      f"dataset 'cola' ({MISSING}@main): the hub has no dataset '{MISSING}' (or it is "
      "private): fix hf_id in tune.json",
      "pin: 1 of 2 branch revisions resolved, 1 written; 0 already pinned; FAILED: cola"]
  pinned = {raw["key"]: raw["hf_revision"] for raw in json.loads(tune.read_text())["datasets"]}
  assert pinned["rte"] == sha_of(rte.hf_id, rte.hf_revision) and pinned["cola"] == "main"


def test_a_missing_catalogue_folder_is_one_line(tmp_path):
  from symbol_tuning.data.sources import hf_pins

  lines = []
  assert hf_pins.pin(tmp_path / "none", out=lines.append) == 1
  assert len(lines) == 1 and lines[0].startswith("pin: cannot read the catalogue file ")
  assert str(tmp_path / "none" / "tune.json") in lines[0]
