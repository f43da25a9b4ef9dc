"""Prompts' token ids are composed from memoised pieces; they must equal whole-prompt
tokenization, for our local vocabulary and for a T5-layout test model from seqio, up to
sentencepiece's ties between equal-score segmentations; and whether a builder composes
never depends on the order it builds prompts in."""
import os

import pytest
import seqio

import symbol_tuning.data.tasks  # noqa: F401  (registers)
from symbol_tuning.data import pipeline, prompts, tokens, vocab

SEQIO_TEST_SPM = os.path.join(os.path.dirname(seqio.__file__),
                              "test_data/sentencepiece/sentencepiece.model")


@pytest.mark.parametrize("vocab_path", ["local", SEQIO_TEST_SPM])
@pytest.mark.parametrize("task,setting", [("navigate", "tune"),
                                          ("vitaminc_fact_verification", "tune"),
                                          ("social_support", "instr_symbols")])
def test_composed_ids_equal_full_tokenization(bigbench_dir, vocab_path, task, setting):
  vocabulary = vocab._make(vocab_path)
  spec = seqio.get_mixture_or_task(
      f"symbol_tuning.bigbench.{task}" if setting == "tune"
      else f"symbol_tuning.eval_bigbench.{task}.{setting}").source.spec
  split = "train" if setting == "tune" else "validation"
  builder = pipeline.PromptBuilder(spec, split, 1023, vocabulary=vocabulary)
  fitted = 0
  for i in range(40):
    try:
      p = builder.build(i % len(builder.queries), i)
    except prompts.PromptError:
      continue
    assert list(p.input_ids) == vocabulary.tokenizer.EncodeAsIds(p.inputs)
    assert len(p.input_ids) <= 1023 and p.metadata["num_input_tokens"] == len(p.input_ids)
    fitted += p.metadata["num_dropped"] > 0
  assert builder.compose  # the self-check never had to fall back
  if task == "vitaminc_fact_verification" and vocab_path == "local":
    assert fitted > 0


def test_builder_falls_back_when_a_vocabulary_is_not_composable(bigbench_dir, monkeypatch):
  spec = seqio.get_mixture_or_task("symbol_tuning.bigbench.navigate").source.spec
  real = tokens.PieceEncoder.encode_full
  monkeypatch.setattr(tokens.PieceEncoder, "encode_full", lambda self, text: real(self, text) + [5])
  builder = pipeline.PromptBuilder(spec, "train", 2047)
  assert not builder.compose  # decided on the probe prompts, before any prompt is built
  p = builder.build(0, 0)
  assert list(p.input_ids) == builder.tokens.encode(p.inputs)


def _first_tie(builder, seeds):
  """The first prompt whose composed ids differ from whole-prompt tokenization."""
  for i in seeds:
    try:
      p = builder.build(i % len(builder.queries), (i, 7))
    except prompts.PromptError:
      continue
    if list(p.input_ids) != builder.pieces.encode_full(p.inputs):
      return i, p
  raise AssertionError("no prompt with a tie in its segmentation")


def test_equal_score_segmentations_keep_composition_and_ids_do_not_depend_on_order(
    bigbench_dir):
  # One movie_dialog exemplar ('"Hmmm."') has two segmentations of equal score (m+mm, mm+m);
  # sentencepiece picks by float rounding that depends on the text before it.
  spec = seqio.get_mixture_or_task(
      "symbol_tuning.bigbench.movie_dialog_same_or_different").source.spec
  builder = pipeline.PromptBuilder(spec, "train", 1023)
  i, tie = _first_tie(builder, range(2000))
  whole = builder.pieces.encode_full(tie.inputs)
  assert builder.pieces.decode(tie.input_ids) == builder.pieces.decode(whole)
  assert len(tie.input_ids) == len(whole)
  assert builder.compose  # the tie did not switch composition off
  # A builder that meets the tie first (as a worker process may) builds the same ids.
  fresh = pipeline.PromptBuilder(spec, "train", 1023)
  assert fresh.build(i % len(fresh.queries), (i, 7)).input_ids == tie.input_ids
  for j in range(8):
    assert (fresh.build(j % len(fresh.queries), (j, 7)).input_ids
            == builder.build(j % len(builder.queries), (j, 7)).input_ids)


def test_concurrent_writers_of_one_token_cache_key_all_succeed(tmp_path, monkeypatch, capsys):
  """Threads of one process tokenizing the same texts at once each write the cache through
  their own temporary file (a per-process name made them replace each other's file)."""
  import threading  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("SYMBOL_TUNING_CACHE", str(tmp_path))
  texts = tuple(f"text {i}" for i in range(2000))
  barrier = threading.Barrier(4)
  savez = tokens.np.savez

  def savez_together(*args, **kwargs):
    barrier.wait()  # every thread has opened its temporary file before any replaces it
    savez(*args, **kwargs)

  monkeypatch.setattr(tokens.np, "savez", savez_together)

  def encode(batch):
    return [[len(t), i] for i, t in enumerate(batch)]

  def fill():
    tokens._token_ids_in_process.clear()  # pylint: disable=protected-access
    tokens.token_ids(texts, "digest-of-a-test-tokenizer", encode)

  threads = [threading.Thread(target=fill) for _ in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert "token cache not written" not in capsys.readouterr().err
  files = list((tmp_path / "token_ids").iterdir())
  assert [f.suffix for f in files] == [".npz"]  # one entry, no temporary file left behind
  tokens._token_ids_in_process.clear()  # pylint: disable=protected-access
  assert [list(a) for a in tokens.token_ids(texts, "digest-of-a-test-tokenizer", None)][:2] \
      == [[6, 0], [6, 1]]


def test_builders_share_one_memo_of_the_symbol_pool(bigbench_dir):
  """Every builder of a symbols setting reads one {symbol: ids} of the evaluation pool
  (~270k texts) per process and vocabulary, made once: copying it into each builder cost an
  11-task evaluation suite ~2 s every time it was built. The ids are the tokenizer's."""
  from symbol_tuning.data import symbols  # pylint: disable=import-outside-toplevel

  builders = [pipeline.PromptBuilder(
      seqio.get_mixture_or_task(f"symbol_tuning.eval_bigbench.{task}.symbols").source.spec,
      "validation", 1023) for task in ("implicatures", "social_support")]
  shared = [b.pieces._shared for b in builders]  # pylint: disable=protected-access
  assert len(shared[0]) == len(shared[1]) == 1 and shared[0][0] is shared[1][0]
  pool = symbols.get_pool("eval")
  assert len(shared[0][0]) == len(set(pool.integers + pool.letter_strings + pool.words))
  tokenizer = vocab.resolve().tokenizer
  for symbol in (pool.integers[7], pool.letter_strings[-1], pool.words[100]):
    assert list(builders[1].pieces(symbol)) == tokenizer.EncodeAsIds(symbol)
  # A second share of the same collection is not rebuilt (its texts are not even listed).
  builders[0].pieces.share("symbol_pool:eval", lambda: pytest.fail("rebuilt"))
  assert len(builders[0].pieces._shared) == 1  # pylint: disable=protected-access
