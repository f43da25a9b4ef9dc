"""Text -> token ids without TensorFlow: all the prompt builder needs of a vocabulary.

A `Tokenizer` is the portable part of a vocabulary: a sentencepiece model's bytes, or the
path of a HF tokenizer.json. It pickles small, so a prompt worker process
(`symbol_tuning.data.prompt_workers`) rebuilds the very same tokenizer without importing
TensorFlow or seqio; `vocab.tokenizer_of` makes one from a seqio vocabulary.

Example: Tokenizer("sentencepiece", spm_bytes).EncodeAsIds("a dog") -> [3, 71]
"""
import array
import functools
import hashlib
import itertools
import os
import sys
import tempfile
import threading
from typing import Callable, Sequence
import zipfile

import numpy as np

from symbol_tuning import settings


class Tokenizer:
  """sentencepiece or HF `tokenizers`, loaded on first use (also after unpickling)."""

  def __init__(self, kind: str, source: bytes | str, loaded=None):
    if kind not in ("sentencepiece", "hf"):
      raise ValueError(f"unknown tokenizer kind {kind!r}")
    self.kind = kind  # "sentencepiece" | "hf"
    self.source = source  # the serialized model proto | the tokenizer.json path
    self._loaded = loaded  # an already loaded processor (the seqio vocabulary's own)

  def __getstate__(self):
    return {"kind": self.kind, "source": self.source, "_loaded": None}

  @functools.cached_property
  def digest(self) -> str:
    """Names this tokenizer by its content, not its path (keys prompt worker pools and
    the token cache: two tokenizer.json files written to one path are two tokenizers)."""
    if isinstance(self.source, bytes):
      content = self.source
    else:
      with open(self.source, "rb") as f:
        content = f.read()
    return f"{self.kind}:{hashlib.blake2b(content, digest_size=16).hexdigest()}"

  def _load(self):
    if self._loaded is None:
      if self.kind == "sentencepiece":
        import sentencepiece  # pylint: disable=g-import-not-at-top
        processor = sentencepiece.SentencePieceProcessor()
        processor.LoadFromSerializedProto(self.source)
      else:
        from tokenizers import Tokenizer as HFTokenizer  # pylint: disable=g-import-not-at-top
        processor = HFTokenizer.from_file(self.source)
      self._loaded = processor
    return self._loaded

  def EncodeAsIds(self, text):  # pylint: disable=invalid-name  (sentencepiece's name)
    """Ids of a text, or of each text of a list (as sentencepiece's EncodeAsIds)."""
    processor = self._load()
    if self.kind == "sentencepiece":
      return processor.EncodeAsIds(text)
    if isinstance(text, str):
      return processor.encode(text, add_special_tokens=False).ids
    return [e.ids for e in processor.encode_batch(list(text), add_special_tokens=False)]

  def DecodeIds(self, ids) -> str:  # pylint: disable=invalid-name  (sentencepiece's name)
    """The text of a list of ids."""
    processor = self._load()
    if self.kind == "sentencepiece":
      return processor.DecodeIds(list(ids))
    return processor.decode(list(ids), skip_special_tokens=False)


class TokenCounter:
  """text -> number of tokens (no EOS); remembers the last text's ids, so the prompt that
  was counted last (the final one) need not be tokenized again."""

  def __init__(self, tokenizer: Tokenizer):
    self._encode = tokenizer.EncodeAsIds  # no TF in the loop
    self._last = (None, None)

  def encode(self, text: str) -> list[int]:
    last = self._last  # one read: tf.data may call from several threads
    if last[0] == text:
      return last[1]
    ids = self._encode(text)
    self._last = (text, ids)
    return ids

  def __call__(self, text: str) -> int:
    return len(self.encode(text))


class PieceEncoder:
  """Memoised text -> ids for composing prompts from pieces (see prompts.build_prompt).

  Ids are stored as int32 arrays: a 25k-example dataset costs ~10 MB, not ~100 MB of
  Python ints. PromptBuilder checks on fixed probe prompts that the vocabulary tokenizes
  whitespace-joined texts as the concatenation of their tokens (true for T5's
  sentencepiece models, which split on whitespace and turn newlines into spaces, up to
  ties between equal-score segmentations) before relying on it.
  """

  def __init__(self, tokenizer: Tokenizer):
    self._encode = tokenizer.EncodeAsIds
    self._decode = tokenizer.DecodeIds
    self._tokenizer_digest = tokenizer.digest
    self._memo: dict[str, array.array] = {}
    self._shared: list[dict[str, array.array]] = []  # read-only memos of `share`

  def __call__(self, text: str) -> array.array:
    ids = self._memo.get(text)
    if ids is None:
      for memo in self._shared:
        ids = memo.get(text)
        if ids is not None:
          return ids
      ids = self._memo[text] = array.array("i", self._encode(text))
    return ids

  def prime(self, texts: Sequence[str]) -> None:
    """Memoises the ids of `texts` (a dataset's examples) in one go, from the on-disk
    token cache when this vocabulary has tokenized the same texts before (in any
    process), so building prompts never waits on the tokenizer."""
    for text, ids in zip(texts, token_ids(tuple(texts), self._tokenizer_digest, self._encode)):
      self._memo.setdefault(text, ids)

  def share(self, name: str, texts: Callable[[], Sequence[str]]) -> None:
    """Memoises a fixed collection of texts that `name` identifies in this process (a
    symbol pool: up to ~270k texts) in one read-only {text: ids} per tokenizer, which every
    encoder of the process reads. `prime` would copy them into each encoder, and an
    evaluation suite makes one per task and setting. `texts` is called only the first time.

    Example: two builders' encoders share("symbol_pool:eval", lambda: pool_texts): the
      first tokenizes (or reads the token cache) and builds the memo, the second reuses it.
    """
    key = (name, self._tokenizer_digest)
    with _shared_lock:  # tf.data threads make builders concurrently
      memo = _shared_memos.get(key)
      if memo is None:
        collection = tuple(texts())
        memo = _shared_memos[key] = dict(
            zip(collection, token_ids(collection, self._tokenizer_digest, self._encode)))
    if not any(m is memo for m in self._shared):
      self._shared.append(memo)

  def encode_full(self, text: str) -> list[int]:
    return self._encode(text)

  def decode(self, ids) -> str:
    return self._decode(ids)


_TOKEN_CACHE_VERSION = 2
# {(collection name, tokenizer digest): {text: ids}} of PieceEncoder.share, per process.
_shared_memos: dict[tuple[str, str], dict[str, array.array]] = {}
_shared_lock = threading.Lock()
_token_ids_in_process: dict[str, list[array.array]] = {}


def token_ids(texts: tuple[str, ...], tokenizer_digest: str, encode) -> list[array.array]:
  """The ids of every text, cached in this process and on disk under
  $SYMBOL_TUNING_CACHE/token_ids/ (keyed by the tokenizer's content digest and the texts).

  Example: token_ids(("a dog", "a cat"), Tokenizer(...).digest, spm.EncodeAsIds)
    -> [array('i', [3, 71]), array('i', [3, 420])]; a second call, here or in another
    process, reads them back instead of tokenizing again.
  """
  digest = hashlib.blake2b(digest_size=16)
  digest.update(f"v{_TOKEN_CACHE_VERSION}\x1f{tokenizer_digest}\x1f".encode())
  for text in texts:
    digest.update(text.encode() + b"\x1e")
  key = digest.hexdigest()
  cached = _token_ids_in_process.get(key)
  if cached is not None:
    return cached
  path = settings.cache_dir() / "token_ids" / f"{key}.npz"
  flat = offsets = None
  if path.is_file():
    try:
      with np.load(path) as stored:
        flat, offsets = stored["ids"], stored["offsets"]
      if len(offsets) != len(texts) + 1:
        flat = offsets = None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      flat = offsets = None  # unreadable: tokenize again and overwrite
  if flat is None:
    encoded = encode(list(texts)) if texts else []
    offsets = np.cumsum([0] + [len(ids) for ids in encoded], dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(encoded), np.int32, int(offsets[-1]))
    _write_atomically(path, flat, offsets)
  data = flat.astype(np.int32, copy=False).tobytes()
  ids = []
  for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
    piece = array.array("i")
    piece.frombytes(data[4 * start:4 * end])
    ids.append(piece)
  _token_ids_in_process[key] = ids
  return ids


def _write_atomically(path, flat, offsets) -> None:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name unique to this writer: two threads (or processes) filling the same key at once
    # each write their own file, and the last replace wins.
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
      np.savez(f, ids=flat, offsets=offsets)
    os.replace(tmp, path)  # readers never see a partial file
  except OSError as e:  # a read-only cache only costs speed
    print(f"symbol_tuning: token cache not written ({e})", file=sys.stderr)
