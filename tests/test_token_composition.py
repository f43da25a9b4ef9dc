"""Prompts' token ids are composed from memoised pieces; they must equal whole-prompt
tokenization, for our local vocabulary and for a T5-layout test model from seqio."""
import os

import pytest
import seqio

import symbol_tuning.tasks  # noqa: F401  (registers)
from symbol_tuning import pipeline, prompts, vocab

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
  builder = pipeline.PromptBuilder(spec, "train", 2047)
  real = builder.pieces.encode_full
  monkeypatch.setattr(builder.pieces, "encode_full", lambda text: real(text) + [5])
  p = builder.build(0, 0)
  assert not builder.compose
  assert list(p.input_ids) == builder.tokens.encode(p.inputs)
