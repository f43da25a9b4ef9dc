"""Pinning the catalogue's hub revisions: each HF entry whose `hf_revision` is a branch
(`main`, `refs/convert/parquet`) gets that branch's current commit sha, written into its
tasks/*.json file in place (README, "Dataset pins").

  python -m symbol_tuning.data.sources.hf pin [--dataset KEY ...] [--check] [--tasks-dir D]

Example: tune.json's rte entry `"hf_revision": "refs/convert/parquet"` -> the hub answers
/api/datasets/aps/super_glue/revision/refs%2Fconvert%2Fparquet with {"sha": "9f1c...", ...}
-> the same line with `"hf_revision": "9f1c..."`, every other byte of the file unchanged.

The sha comes from huggingface_hub's client (`HfApi(endpoint).dataset_info(repo,
revision=branch).sha`), at the endpoint settings.hf_endpoint() names (HF_ENDPOINT).
Entries already at a sha are left alone; to move a pin, put the branch name back and pin
again. A dataset the hub cannot resolve is one line naming it; the others are still pinned.
"""
import dataclasses
import json
import os
import pathlib
import tempfile

from symbol_tuning import settings
from symbol_tuning.data import catalogue

HF_GROUPS = ("tune", "eval")  # the catalogue files with HF entries
TIMEOUT_S = 30  # per hub request


class PinError(ValueError):
  """A revision could not be resolved or written (the message names the dataset)."""


class HubUnreachable(PinError):
  """No answer from the hub at all: the other datasets would fare no better."""


@dataclasses.dataclass(frozen=True)
class Branch:
  """An HF entry that follows a branch: where it is written and what it reads."""

  path: pathlib.Path  # its tasks/*.json file
  key: str
  hf_id: str
  revision: str


def branch_entries(tasks_dir: pathlib.Path, keys=None) -> tuple[list[Branch], int]:
  """(the HF entries of `tasks_dir` that follow a branch, how many are already pinned);
  `keys` keeps those datasets only (an unknown key is a PinError listing the known ones).

  Example: the shipped tasks/ -> 33 Branch entries (22 at main, 11 at
  refs/convert/parquet), 0 pinned; keys ["rte"] -> [Branch(tune.json, "rte",
  "aps/super_glue", "refs/convert/parquet")], 0.
  """
  found, pinned, known = [], 0, []
  for group in HF_GROUPS:
    path = tasks_dir / catalogue.CATALOGUE_FILES[group]
    try:
      raws = json.loads(path.read_text(encoding="utf-8"))["datasets"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise PinError(f"pin: cannot read the catalogue file {path} ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); --tasks-dir names a "
                     "folder holding tune.json and eval.json") from None
    for raw in raws:
      if raw.get("source") != "hf":
        continue
      known.append(raw["key"])
      if keys and raw["key"] not in keys:
        continue
      revision = raw.get("hf_revision")
      if not revision:
        raise PinError(f"{path}: dataset {raw['key']!r} names no hf_revision (the branch it "
                       "follows: main, or refs/convert/parquet for script-only datasets)")
      if catalogue.PINNED_REVISION.fullmatch(revision):
        pinned += 1
      else:
        found.append(Branch(path, raw["key"], raw["hf_id"], revision))
  unknown = sorted(set(keys or ()) - set(known))
  if unknown:
    raise PinError(f"pin: no HF dataset {unknown} in {tasks_dir}; known: {sorted(known)}")
  return found, pinned


def resolve(api, branch: Branch) -> str:
  """The commit sha the hub's `branch.revision` of `branch.hf_id` is at now."""
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top

  where = f"dataset {branch.key!r} ({branch.hf_id}@{branch.revision})"
  try:
    sha = api.dataset_info(branch.hf_id, revision=branch.revision, timeout=TIMEOUT_S).sha
  except errors.RepositoryNotFoundError:
    raise PinError(f"{where}: the hub has no dataset {branch.hf_id!r} (or it is private): "
                   f"fix hf_id in {branch.path.name}") from None
  except errors.RevisionNotFoundError:
    raise PinError(f"{where}: the hub has no revision {branch.revision!r} of it: fix "
                   f"hf_revision in {branch.path.name}") from None
  except Exception as e:  # pylint: disable=broad-except  (httpx's and the hub's many types)
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    # An HTTP error answered for this dataset; anything else (no route, DNS, timeout, offline
    # mode) would answer every dataset the same way.
    kind = PinError if isinstance(e, errors.HfHubHTTPError) else HubUnreachable
    raise kind(f"{where}: the hub at {api.endpoint} did not answer "
               f"({type(e).__name__}: {first})") from None
  if not sha or not catalogue.PINNED_REVISION.fullmatch(sha):
    raise PinError(f"{where}: the hub at {api.endpoint} answered no commit sha ({sha!r})")
  return sha


def rewrite(path: pathlib.Path, shas: dict[str, str]) -> None:
  """Writes `shas` ({key: sha}) into the `hf_revision` of those entries of `path`, in
  place: only the revision's text changes (each entry sits on a line of its own, as the
  catalogue files are written); the result is checked to parse as the old file with just
  those revisions changed before it replaces it.

  Example: the line {"key": "rte", ..., "hf_revision": "refs/convert/parquet", ...},
    shas {"rte": "9f1c..."} -> the same line with "hf_revision": "9f1c...".
  """
  text = path.read_text(encoding="utf-8")
  lines, left = text.splitlines(keepends=True), dict(shas)
  for i, line in enumerate(lines):
    body = line.strip().rstrip(",")
    if not (body.startswith("{") and '"hf_revision"' in body):
      continue
    try:
      raw = json.loads(body)
    except ValueError:
      continue
    key = raw.get("key") if isinstance(raw, dict) else None
    if key not in left:
      continue
    old = f'"hf_revision": {json.dumps(raw["hf_revision"])}'
    if line.count(old) != 1:
      raise PinError(f"{path}: dataset {key!r}: cannot find {old} once on its line to "
                     "replace; edit hf_revision by hand")
    lines[i] = line.replace(old, f'"hf_revision": {json.dumps(left.pop(key))}')
  if left:
    raise PinError(f"{path}: datasets {sorted(left)} are not one entry per line; edit their "
                   "hf_revision by hand")
  new = "".join(lines)
  expected = json.loads(text)
  for raw in expected["datasets"]:
    if raw.get("key") in shas and raw.get("source") == "hf":
      raw["hf_revision"] = shas[raw["key"]]
  if json.loads(new) != expected:
    raise PinError(f"{path}: rewriting {sorted(shas)} in place would change more than their "
                   "hf_revision; edit them by hand")
  fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write(new)
  os.replace(staged, path)  # a reader sees the old file or the new one, never half


def pin(tasks_dir=None, keys=None, check: bool = False, out=print) -> int:
  """Resolves every branch-following HF entry of `tasks_dir` (the catalogue by default;
  `keys`: those datasets only) and, unless `check`, writes the shas in place. Prints one
  line per dataset and a summary through `out`; returns the exit status: 1 if any dataset
  failed (or, with `check`, if any entry still follows a branch), else 0."""
  from huggingface_hub import HfApi  # pylint: disable=g-import-not-at-top

  tasks_dir = pathlib.Path(tasks_dir) if tasks_dir else settings.catalogue_dir()
  try:
    branches, already = branch_entries(tasks_dir, keys)
  except PinError as e:
    out(str(e))
    return 1
  if branches and settings.hf_offline():
    out("pin: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; unset it where the hub is "
        "reachable to resolve the revisions")
    return 1
  api = HfApi(endpoint=settings.hf_endpoint())
  shas: dict[pathlib.Path, dict[str, str]] = {}
  failed = []
  for branch in branches:
    try:
      sha = resolve(api, branch)
    except HubUnreachable as e:
      failed.extend(b.key for b in branches[branches.index(branch):])
      out(f"{e}; stopped, {len(branches) - branches.index(branch) - 1} datasets not tried")
      break
    except PinError as e:
      failed.append(branch.key)
      out(str(e))
      continue
    shas.setdefault(branch.path, {})[branch.key] = sha
    out(f"{branch.key}: {branch.hf_id}@{branch.revision} -> {sha}"
        + (" (not written: --check)" if check else ""))
  written = 0
  if not check:
    for path, found in shas.items():
      try:
        rewrite(path, found)
      except PinError as e:
        failed.extend(found)
        out(str(e))
        continue
      written += len(found)
  resolved = sum(len(found) for found in shas.values())
  out(f"pin: {resolved} of {len(branches)} branch revisions resolved, {written} written; "
      f"{already} already pinned" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
  return 1 if failed or (check and branches) else 0
