"""A prompt is a pure function of (seed, task, split, query index, epoch) (issue #20).

The same prompts come out for any host count and shard index, build batch, number of prompt
workers, and from the plain-Python builder called on the source's (query, seeds) stream.
"""
import collections

import pytest
import seqio

TASK = "symbol_tuning.bigbench.presuppositions_as_nli"  # 147 validation queries
SPLIT = "validation"
SEED = 3
EPOCHS = 2
LENGTHS = {"inputs": 1024, "targets": 16}


def _prompts(num_shards: int = 1, index: int | None = None) -> collections.Counter:
  """(query, inputs text, input ids, targets) of every prompt of the shards (all of them
  when index is None), counted."""
  import symbol_tuning.data.tasks  # pylint: disable=unused-import

  task = seqio.get_mixture_or_task(TASK)
  out = collections.Counter()
  for i in range(num_shards) if index is None else (index,):
    ds = task.get_dataset(LENGTHS, split=SPLIT, shuffle=True, seed=SEED, num_epochs=EPOCHS,
                          shard_info=seqio.ShardInfo(i, num_shards))
    out.update((int(ex["query"]), ex["inputs_pretokenized"].decode(),
                tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist()))
               for ex in ds.as_numpy_iterator())
  return out


@pytest.fixture(scope="module")
def one_host(bigbench_dir):
  del bigbench_dir
  prompts = _prompts()
  # Every query in each epoch (but the few whose prompt cannot fit); an epoch
  # draws new prompts for the same query.
  assert len({q for q, *_ in prompts}) >= 145
  assert 1.9 * 147 < sum(prompts.values()) <= EPOCHS * 147 and len(prompts) > 147
  return prompts


@pytest.mark.parametrize("num_shards", [2, 4])
def test_the_shards_together_are_the_one_host_stream(one_host, num_shards):
  shards = [_prompts(num_shards, i) for i in range(num_shards)]
  assert sum(shards, collections.Counter()) == one_host
  # Shares of about 1/num_shards each (prompts that cannot fit are left out).
  sizes = [sum(s.values()) for s in shards]
  assert min(sizes) > 0.8 * sum(sizes) / num_shards


@pytest.mark.parametrize("workers,build_batch", [("2", 5), ("0", 3)])
def test_workers_and_build_batches_build_the_same(one_host, workers, build_batch,
                                                  monkeypatch):
  from symbol_tuning.data import pipeline

  monkeypatch.setenv("SYMBOL_TUNING_PROMPT_WORKERS", workers)
  monkeypatch.setattr(pipeline, "BUILD_BATCH", build_batch)
  monkeypatch.setattr(pipeline, "WORKER_BUILD_BATCH", build_batch)
  assert _prompts(2) == one_host


def test_the_plain_python_builder_builds_the_stream_from_query_and_seeds(one_host):
  """The source's (query, seeds) pairs, built one by one by prompt_builder outside
  TensorFlow: the pipeline's prompts (EOS appended as the task does)."""
  from symbol_tuning.data import pipeline

  task = seqio.get_mixture_or_task(TASK)
  source = task.source
  stream = source.get_dataset(SPLIT, shuffle=True, seed=SEED, num_epochs=EPOCHS)
  builder = pipeline.PromptBuilder(source.spec, SPLIT, LENGTHS["inputs"] - 1)
  eos = int(task.output_features["inputs"].vocabulary.eos_id)
  built = collections.Counter()
  for ex in stream.as_numpy_iterator():
    prompt = builder.build(int(ex["query"]), tuple(int(s) for s in ex["seeds"]))
    targets = list(builder.pieces(prompt.targets))[:LENGTHS["targets"] - 1] + [eos]
    built[(int(ex["query"]), prompt.inputs, tuple(prompt.input_ids) + (eos,),
           tuple(targets))] += 1
  assert built == one_host


def test_the_seed_changes_the_prompts(one_host):
  import symbol_tuning.data.tasks  # pylint: disable=unused-import

  ds = seqio.get_mixture_or_task(TASK).get_dataset(LENGTHS, split=SPLIT, shuffle=True,
                                                   seed=SEED + 1, num_epochs=1)
  other = {ex["inputs_pretokenized"].decode() for ex in ds.as_numpy_iterator()}
  assert len(other & {text for _, text, *_ in one_host}) < 10
