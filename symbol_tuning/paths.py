"""One path type for every file a user names: etils.epath, so `gs://bucket/run` works
wherever a local folder does (TensorFlow's gfile or gcsfs underneath; orbax and tensorstore
take the same strings for arrays).

  path("run")              -> /current/dir/run  (local: expanded, absolute)
  path("gs://b/run")       -> gs://b/run        (untouched; never ./gs:/b/run)
  is_remote("gs://b/run")  -> True
"""
import os
import shutil
import socket
import tempfile
import threading

from etils import epath


class StoragePathError(ValueError):
  """A path that cannot be read or written (missing bucket, no credentials, no server)."""


def is_remote(p) -> bool:
  return "://" in os.fspath(p)


def path(p) -> epath.Path:
  """epath.Path of a user's path; local ones expanded (~) and made absolute."""
  return epath.Path(p) if is_remote(p) else epath.Path(p).expanduser().absolute()


def kvstore(p) -> dict:
  """tensorstore's kvstore spec of a folder.

  kvstore("gs://b/ckpt/target.x") -> {"driver": "gcs", "bucket": "b", "path": "ckpt/target.x/"}
  kvstore("/tmp/ckpt/target.x")   -> {"driver": "file", "path": "/tmp/ckpt/target.x"}
  """
  p = os.fspath(p)
  if p.startswith("gs://"):
    bucket, _, key = p[len("gs://"):].partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": key.rstrip("/") + "/"}
  return {"driver": "file", "path": p}


def open_remote(p):
  """A text file object of gs:// file `p`: gin's file reader for remote gin files."""
  return epath.Path(p).open("r")


def is_remote_file(p) -> bool:
  return is_remote(p) and epath.Path(p).is_file()


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def call_bounded(fn, what: str, timeout: float):
  """fn()'s result; its error, or no answer within `timeout` seconds, is a StoragePathError
  of one line: `what` (the reason). fn runs in a daemon thread, so a client still retrying
  does not keep the process alive."""
  outcome = {}

  def run():
    try:
      outcome["value"] = fn()
    except Exception as e:  # pylint: disable=broad-except
      outcome["error"] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout)
  if "error" in outcome:
    raise StoragePathError(f"{what} ({_first_line(outcome['error'])})")
  if "value" not in outcome:
    raise StoragePathError(f"{what} (no answer from the storage service within {timeout:.0f} s: "
                           "network, endpoint or credentials)")
  return outcome["value"]


def _check_bucket(p) -> None:
  """A FileNotFoundError if gs:// path `p`'s bucket is missing (gcsfs would create a missing
  bucket on write; TF's gfile would not); nothing for a local path."""
  if is_remote(p):
    bucket = epath.Path("/".join(os.fspath(p).split("/")[:3]))
    if not bucket.exists():
      raise FileNotFoundError(f"bucket {bucket} does not exist or is not visible")


# (path, what) -> None (answered) or the one-line error: checked once per process, a failure
# too, so that N datasets under one unreachable folder do not wait N timeouts.
_CHECKED: dict[tuple[str, str], str | None] = {}


def check_readable(p, what: str, timeout: float) -> None:
  """A StoragePathError of one line when gs:// folder `p` (what: 'SYMBOL_TUNING_DATA_DIR',
  ...) lies in a missing bucket, or the storage service does not answer within `timeout`
  seconds (no credentials, no server); local paths are not checked.

    check_readable("gs://no-such-bucket/data", "SYMBOL_TUNING_DATA_DIR", 60)
    -> StoragePathError: SYMBOL_TUNING_DATA_DIR gs://no-such-bucket/data: cannot be read
       (FileNotFoundError: bucket gs://no-such-bucket does not exist or is not visible)
  """
  if not is_remote(p):
    return
  key = (os.fspath(p), what)
  if key not in _CHECKED:
    try:
      call_bounded(lambda: _check_bucket(p), f"{what} {os.fspath(p)}: cannot be read", timeout)
      _CHECKED[key] = None
    except StoragePathError as e:
      _CHECKED[key] = str(e)
  if _CHECKED[key]:
    raise StoragePathError(_CHECKED[key])


def forget_checks() -> None:
  """Forgets check_readable's answers (after the storage service or the paths changed)."""
  _CHECKED.clear()


def make_dir(p, what: str, timeout: float) -> epath.Path:
  """Creates folder `p` (what: 'MODEL_DIR', ...) and checks it can be written; a gs:// path
  to a missing bucket, without credentials or without a server fails within `timeout`
  seconds (settings.storage_timeout(): the GCS clients would otherwise retry for minutes)
  with one line naming the path."""
  target = path(p)

  def touch():
    _check_bucket(p)
    target.mkdir(parents=True, exist_ok=True)
    # Writing is what a run needs; a GCS "folder" only exists once it holds an object.
    probe = target / f".write_probe_{socket.gethostname()}_{os.getpid()}"
    probe.write_text("")
    probe.unlink()

  return call_bounded(lambda: touch() or target, f"{what} {p}: cannot be written", timeout)


def upload_dir(local: str, dest) -> None:
  """Copies the files under local folder `local` into `dest` (overwriting), subfolders too."""
  dest = path(dest)
  for root, _, files in os.walk(local):
    target = dest / os.path.relpath(root, local) if root != local else dest
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(files):
      (target / name).write_bytes(epath.Path(root, name).read_bytes())


def list_files(src) -> list[str]:
  """The files under folder `src`, subfolders too, as sorted relative names ('a/b.txt').
  (epath's rglob refuses gs://, and its walk drops the gs:// of the folders it yields.)"""
  names, folders = [], [(path(src), "")]
  while folders:
    folder, prefix = folders.pop()
    for child in folder.iterdir():
      if child.is_dir():
        folders.append((child, f"{prefix}{child.name}/"))
      else:
        names.append(prefix + child.name)
  return sorted(names)


def download_files(src, names: list[str]) -> str:
  """A new local temporary folder holding copies of `src`/name for each name (relative
  names, 'train/state.json' included); the caller removes it (shutil.rmtree)."""
  local = tempfile.mkdtemp(prefix="symbol_tuning_")
  try:
    for name in names:
      target = epath.Path(local, name)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes((path(src) / name).read_bytes())
  except BaseException:
    shutil.rmtree(local, ignore_errors=True)
    raise
  return local
