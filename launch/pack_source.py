#!/usr/bin/env python3
"""Packs a local checkout into the tarball `tpu_vm.py setup` copies to every worker.

  python launch/pack_source.py SOURCE_DIR OUT.tar.gz

What goes in: in a git work tree, the files git would commit (tracked ones that still
exist, and untracked ones that .gitignore does not exclude), so a checkout's venv, build/,
runs/ and datasets stay on the laptop; outside git, every file except SKIPPED folders.

Each file is read once and written with the length read: a process writing into the
checkout meanwhile (a local run, a build) cannot fail the copy, as it fails `tar` ("file
changed as we read it", exit status 1). Stdlib only, like the rest of launch/.
"""
import io
import os
import pathlib
import subprocess
import sys
import tarfile

SKIPPED = {".git", ".venv", "__pycache__", "build", ".pytest_cache"}  # outside git only


def _git_files(source: pathlib.Path):
  """Relative paths git would commit, or None when source is not in a git work tree."""
  try:
    result = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False)
  except FileNotFoundError:  # no git on this machine
    return None
  if result.returncode:
    return None
  return [name for name in result.stdout.decode().split("\0") if name]


def _walked_files(source: pathlib.Path):
  for root, dirs, files in os.walk(source):
    dirs[:] = [d for d in dirs if d not in SKIPPED and not d.endswith(".egg-info")]
    for name in files:
      yield os.path.relpath(os.path.join(root, name), source)


def source_files(source) -> list[str]:
  """Sorted relative paths of the regular files to ship (deleted tracked files left out)."""
  source = pathlib.Path(source)
  names = _git_files(source)
  if names is None:
    names = _walked_files(source)
  return sorted(name for name in set(names)
                if (source / name).is_file() and not (source / name).is_symlink())


def pack(source, out) -> tuple[list[str], list[str], int]:
  """Writes source's files into the gzipped tar out.

  Returns (names packed, names removed between listing and reading, bytes before gzip).
  """
  source = pathlib.Path(source)
  packed, vanished, total = [], [], 0
  with tarfile.open(out, "w:gz") as tar:
    for name in source_files(source):
      path = source / name
      try:
        stat, data = path.stat(), path.read_bytes()
      except FileNotFoundError:
        vanished.append(name)
        continue
      info = tarfile.TarInfo(name)
      info.size, info.mode, info.mtime = len(data), stat.st_mode & 0o777, int(stat.st_mtime)
      tar.addfile(info, io.BytesIO(data))
      packed.append(name)
      total += len(data)
  return packed, vanished, total


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print("usage: python launch/pack_source.py SOURCE_DIR OUT.tar.gz", file=sys.stderr)
    return 2
  source, out = argv
  if not os.path.isdir(source):
    print(f"error: {source} is not a folder (--source_dir)", file=sys.stderr)
    return 2
  if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
    print(f"error: the folder of {out} does not exist", file=sys.stderr)
    return 2
  packed, vanished, size = pack(source, out)
  print(f"packed {len(packed)} files ({size / 1e6:.1f} MB) of {source} into {out}",
        file=sys.stderr)
  if vanished:
    print(f"left out {len(vanished)} files removed while packing: {', '.join(vanished[:5])}"
          + (" ..." if len(vanished) > 5 else ""), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
