"""The seqio pipeline yields the same prompts and packed rows for a seed as it always has.

tests/data/pipeline_golden.json was written by the per-example pipeline of commit d885399
(before prompts were built in batches): `python tests/test_pipeline_golden.py` at that
commit. Each prompt is stored as its metadata plus sha256 digests of its texts and ids, each
packed batch as digests of its arrays, so the file stays small.
"""
import hashlib
import json
import pathlib
import sys

import numpy as np
import pytest
import seqio

GOLDEN = pathlib.Path(__file__).resolve().parent / "data" / "pipeline_golden.json"
PASS = ["inputs_pretokenized", "targets_pretokenized", "template", "k", "k_drawn",
        "num_dropped", "gold", "labels_json", "task", "query"]
# (name, split, lengths, seed, number of prompts or None for the whole finite split)
PROMPT_CASES = (
    ("symbol_tuning_bigbench", "train", (2048, 512), 0, 64),
    # vitaminc at 320 tokens: some prompts cannot fit and are skipped.
    ("symbol_tuning.bigbench.vitaminc_fact_verification", "train", (320, 16), 3, 40),
    ("symbol_tuning.eval_bigbench.anachronisms.flipped", "validation", (2048, 512), 0, None),
)
ROWS_CASE = {"name": "symbol_tuning_bigbench", "lengths": (1024, 16), "batch": 8, "seed": 0,
             "batches": 24}


def _digest(value) -> str:
  data = value if isinstance(value, bytes) else np.ascontiguousarray(value, np.int32).tobytes()
  return hashlib.sha256(data).hexdigest()[:16]


def prompt_records(name, split, lengths, seed, num):
  """The pipeline's prompts as small JSON-able records."""
  import symbol_tuning.data.tasks  # pylint: disable=unused-import

  provider = seqio.get_mixture_or_task(name)
  kw = {"passthrough_features": PASS} if hasattr(provider, "tasks") else {}
  ds = provider.get_dataset({"inputs": lengths[0], "targets": lengths[1]}, split=split,
                            shuffle=True, seed=seed, num_epochs=1, **kw)
  if num is not None:
    ds = ds.take(num)
  out = []
  for ex in ds.as_numpy_iterator():
    out.append({
        "task": ex["task"].decode(), "query": int(ex["query"]),
        **{k: int(ex[k]) for k in ("template", "k", "k_drawn", "num_dropped", "gold")},
        "labels_json": ex["labels_json"].decode(),
        "inputs_pretokenized": _digest(ex["inputs_pretokenized"]),
        "targets_pretokenized": ex["targets_pretokenized"].decode(),
        "inputs": _digest(ex["inputs"]), "targets": _digest(ex["targets"]),
    })
  return out


def row_digests(name, lengths, batch, seed, batches):
  """Digests of the trainer's first packed batches (best-fit packing, host_batches)."""
  import symbol_tuning.data.tasks  # pylint: disable=unused-import  (also when run alone)
  from symbol_tuning.training import data

  cfg = data.DataConfig(name, {"inputs": lengths[0], "targets": lengths[1]}, batch, seed=seed)
  it = data.host_batches(cfg)
  return [{k: _digest(v) for k, v in sorted(next(it).items())} for _ in range(batches)]


def compute() -> dict:
  return {"prompts": [{"case": list(map(str, case)), "records": prompt_records(*case)}
                      for case in PROMPT_CASES],
          "rows": row_digests(**ROWS_CASE)}


@pytest.fixture(scope="module")
def golden():
  return json.loads(GOLDEN.read_text())


# Prompts built in this process and by prompt worker processes (symbol_tuning.data.prompt_workers),
# BUILD_BATCH at a time (None: the default; small ones cross many batch boundaries, where
# skipped prompts and a finite split's end fall).
@pytest.mark.parametrize("index,workers,build_batch",
                         [(i, "2", None) for i in range(len(PROMPT_CASES))] +
                         [(1, "0", None), (1, "0", 3), (2, "2", 5)])
def test_prompts_equal_the_per_example_pipeline(golden, bigbench_dir, index, workers,
                                                build_batch, monkeypatch):
  from symbol_tuning.data import pipeline

  monkeypatch.setenv("SYMBOL_TUNING_PROMPT_WORKERS", workers)
  if build_batch:
    monkeypatch.setattr(pipeline, "BUILD_BATCH", build_batch)
    monkeypatch.setattr(pipeline, "WORKER_BUILD_BATCH", build_batch)
  want = golden["prompts"][index]
  assert want["case"] == list(map(str, PROMPT_CASES[index]))
  got = prompt_records(*PROMPT_CASES[index])
  assert len(got) == len(want["records"])
  for i, (a, b) in enumerate(zip(got, want["records"])):
    assert a == b, f"prompt {i} of {PROMPT_CASES[index][0]}"


@pytest.mark.parametrize("workers,build_batch", [("0", None), ("2", None), ("2", 7)])
def test_packed_rows_equal_the_per_example_pipeline(golden, bigbench_dir, workers, build_batch,
                                                    monkeypatch):
  from symbol_tuning.data import pipeline

  monkeypatch.setenv("SYMBOL_TUNING_PROMPT_WORKERS", workers)
  if build_batch:
    monkeypatch.setattr(pipeline, "BUILD_BATCH", build_batch)
    monkeypatch.setattr(pipeline, "WORKER_BUILD_BATCH", build_batch)
  got = row_digests(**ROWS_CASE)
  for step, (a, b) in enumerate(zip(got, golden["rows"], strict=True)):
    assert a == b, f"batch {step}"


if __name__ == "__main__":
  sys.path.insert(0, str(GOLDEN.parents[2] / "benchmarks"))
  import common  # pylint: disable=g-import-not-at-top,unused-import  (environment)
  common.setup_bigbench()
  GOLDEN.parent.mkdir(exist_ok=True)
  GOLDEN.write_text(json.dumps(compute(), indent=0) + "\n")
  print(f"wrote {GOLDEN}")
