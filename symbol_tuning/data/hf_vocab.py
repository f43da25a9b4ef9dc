"""HuggingFace `tokenizer.json` tokenizers as a seqio vocabulary (for decoder-only models).

  vocab.set_vocabulary("path/to/Qwen2-0.5B")        # a model dir with tokenizer.json
  vocab.set_vocabulary("path/to/tokenizer.json")

Texts are encoded WITHOUT the tokenizer's own special tokens (its BOS/EOS templates):
the seqio output features add EOS where the tasks ask for it, as with sentencepiece.
EOS is the tokenizer's `eos_token` (tokenizer_config.json), else config.json's
`eos_token_id` (the first, where it lists several). Padding is id 0, seqio's convention
(the decoder-only features weight the loss by extent, so a real token 0 stays trained).
Uses the `tokenizers` library (Rust, no TF in the loop); `encode_tf` wraps it in
`tf.py_function`.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import seqio
import tensorflow as tf

from symbol_tuning.data import tokens

TOKENIZER_FILE = "tokenizer.json"


def is_hf_tokenizer(spec: str) -> bool:
  """A tokenizer.json file, or a directory that holds one."""
  return (spec.endswith(".json") and os.path.isfile(spec)) or os.path.isfile(
      os.path.join(spec, TOKENIZER_FILE))


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  return data if isinstance(data, dict) else {}


def _token_text(value) -> Optional[str]:
  # tokenizer_config.json stores special tokens as a string or as {"content": ...}.
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizerVocabulary(seqio.Vocabulary):
  """seqio.Vocabulary over a HF `tokenizers` tokenizer; `EncodeAsIds` serves the prompt
  builder's token counting as sentencepiece's does."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
    path = os.fspath(path)
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(path, TOKENIZER_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise FileNotFoundError(f"vocabulary {path!r}: no {TOKENIZER_FILE}")
    try:
      self._tokenizer = Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises its own exception type
      raise ValueError(f"{file}: not a readable HF tokenizer ({e})") from e
    self._path = path
    self._encoder = tokens.Tokenizer("hf", file, self._tokenizer)
    self._eos_id = self._find_eos(directory, file)
    super().__init__(extra_ids=0)

  def _find_eos(self, directory: str, file: str) -> int:
    eos = _token_text(_read_json(os.path.join(directory, "tokenizer_config.json")).get("eos_token"))
    if eos is not None:
      token_id = self._tokenizer.token_to_id(eos)
      if token_id is None:
        raise ValueError(f"{directory}/tokenizer_config.json: eos_token {eos!r} is not in {file}")
      return token_id
    eos_id = _read_json(os.path.join(directory, "config.json")).get("eos_token_id")
    if isinstance(eos_id, list):
      eos_id = eos_id[0] if eos_id else None
    if eos_id is None:
      raise ValueError(f"{file}: no EOS token (neither tokenizer_config.json's eos_token nor "
                       f"config.json's eos_token_id)")
    return int(eos_id)

  @property
  def tokenizer(self) -> tokens.Tokenizer:
    return self._encoder  # portable: prompt worker processes load it by its file path

  def EncodeAsIds(self, text):  # pylint: disable=invalid-name
    """Ids of a text, or of each text of a list (as sentencepiece's EncodeAsIds)."""
    return self._encoder.EncodeAsIds(text)

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def pad_id(self) -> int:
    return 0

  @property
  def unk_id(self) -> Optional[int]:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self.EncodeAsIds(s)

  def _decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids if int(i) != self._eos_id]
    return self._tokenizer.decode(ids, skip_special_tokens=False)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text):
      return tf.constant(self.EncodeAsIds(text.numpy().decode("utf-8")), tf.int32)
    ids = tf.py_function(encode, [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(values):
      return tf.constant(self._decode(values.numpy().tolist()))
    text = tf.py_function(decode, [ids], tf.string)
    text.set_shape([])
    return text

  def __eq__(self, other):
    return isinstance(other, HFTokenizerVocabulary) and other._path == self._path

  def __hash__(self):
    return hash(("HFTokenizerVocabulary", self._path))
