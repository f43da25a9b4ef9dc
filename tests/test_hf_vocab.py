"""HF tokenizer.json vocabularies: encoding, EOS, TF ops, and the tasks' prompts through them."""
import json
import pathlib
import shutil

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

import readme_support
from symbol_tuning import cli
from symbol_tuning.data import hf_vocab, vocab

TEXT = ["Input: the cat sat on the mat", "Output: foo", "Q: 7281 -> QXT", "A: bar baz",
        "Sentences: a dog ran\nMapped To: 42"] * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  """A small byte-level BPE tokenizer saved as a HF model directory would hold it."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(TEXT, trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<pad>", "</s>", "<s>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  path = tmp_path_factory.mktemp("hf_tok")
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
  return path


def test_encode_decode_eos_and_tf_ops_agree(tokenizer_dir):
  v = vocab._make(str(tokenizer_dir))
  assert isinstance(v, hf_vocab.HFTokenizerVocabulary)
  assert v.eos_id == 1 and v.pad_id == 0
  text = "Input: the dog sat\nOutput: 42"
  ids = v.encode(text)
  assert v.tokenizer.EncodeAsIds(text) == ids and 1 not in ids  # no special tokens added
  assert v.decode(ids + [v.eos_id, 5, 6]) == text  # decoding stops at EOS
  assert v.encode_tf(tf.constant(text)).numpy().tolist() == ids
  assert v.decode_tf(tf.constant(ids)).numpy().decode() == text
  assert v.vocab_size == 300


def test_tasks_build_and_fit_prompts_with_the_hf_tokenizer(tokenizer_dir, bigbench_dir):
  import symbol_tuning.data.tasks  # pylint: disable=unused-import
  vocab.set_vocabulary(str(tokenizer_dir))
  try:
    task = seqio.get_mixture_or_task("symbol_tuning.bigbench.navigate")
    ds = task.get_dataset({"inputs": 256, "targets": 16}, split="train", shuffle=False,
                          seed=0)
    v = vocab.resolve()
    for ex in ds.take(3).as_numpy_iterator():
      inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
      assert 0 < len(inputs) <= 256 and inputs[-1] == v.eos_id and targets[-1] == v.eos_id
      # The prompt is the text the builder fitted, whole: it ends with the query's prefix.
      assert v.decode(inputs) == ex["inputs_pretokenized"].decode()
  finally:
    vocab.set_vocabulary(None)


def test_missing_eos_is_a_clear_error(tmp_path, tokenizer_dir):
  (tmp_path / "tokenizer.json").write_text((tokenizer_dir / "tokenizer.json").read_text())
  with pytest.raises(ValueError, match="no EOS token"):
    hf_vocab.HFTokenizerVocabulary(str(tmp_path))
  np.testing.assert_equal(hf_vocab.is_hf_tokenizer(str(tmp_path)), True)


def test_from_an_hf_directory_to_the_report(tmp_path, monkeypatch, tokenizer_dir, bigbench_dir):
  """README's decoder-only tokenizer commands, as written from a fresh folder, with tiny
  settings appended: an HF decoder-only directory (weights + its tokenizer) at README's
  `path/to/Qwen2-0.5B` trains with the tasks tokenized by its own tokenizer, and the run is
  evaluated with it. (This 300-piece tokenizer spends ~1 token per 3 characters: prompts
  need 1024 tokens.)"""
  from symbol_tuning.checkpoints import save_hf  # pylint: disable=g-import-not-at-top
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  hf_dir = pathlib.Path("path/to/Qwen2-0.5B")
  config = registry.get_config("llama-tiny", vocab_size=384, eos_token_id=1)
  save_hf(config, registry.init_params(config, 0), str(hf_dir))
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tokenizer_dir / name, hf_dir / name)
  tiny = {"train": ["--gin.MIXTURE_OR_TASK_NAME='symbol_tuning.bigbench.navigate'",
                    "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.LOG_PERIOD=1",
                    "--gin.TASK_FEATURE_LENGTHS={'inputs': 1024, 'targets': 16}",
                    "--no_progress"],
          "eval": ["--max_examples", "1", "--input_length", "1024", "--settings", "symbols",
                   "--no_progress"]}
  commands = readme_support.block("Decoder-only models", 1).commands
  gin.clear_config()
  try:
    for command in commands:
      argv = readme_support.cli_argv(command)
      assert cli.main(argv + tiny[argv[2]]) == 0, command
  finally:
    gin.clear_config()
    vocab.set_vocabulary(None)
  results = json.loads((tmp_path / "runs" / "qwen_eval" / "results.json").read_text())
  assert results["num_examples"] > 0 and results["vocabulary"] == str(hf_dir)
