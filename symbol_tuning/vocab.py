"""Vocabularies for the tasks' output features.

`SYMBOL_TUNING_VOCAB` (or `set_vocabulary`, or the CLI's --vocab) picks one:
  flan_t5 (default)  Flan-T5's sentencepiece model on GCS, as t5x binds it (32k pieces + 100
                     ids, vocab_size 32128). Needs GCS access, e.g. on a Cloud TPU VM.
  local              a 8k-piece model shipped in the package, trained offline on the BIG-bench
                     suite's text (T5 layout: pad 0, eos 1, unk 2). For CPU runs and tests.
  <path>             any sentencepiece .model file (e.g. a local copy of Flan-T5's), or a
                     HF tokenizer.json / a model directory holding one (decoder-only
                     models; symbol_tuning.hf_vocab).
Tasks are registered with a `LazyVocabulary` that resolves the choice at first use, so the
choice can be made after `import symbol_tuning.tasks` (e.g. from gin or the CLI).

Rebuild the local model: python -m symbol_tuning.vocab train  (needs BIGBENCH_DIR)
"""
import array
import functools
import hashlib
import itertools
import os
import socket
import sys
import threading
from typing import Sequence
import zipfile

import numpy as np
import seqio

from symbol_tuning import resources

FLAN_T5_VOCAB = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
FLAN_T5_EXTRA_IDS = 0  # the .100extra model already holds the 100 sentinels (as t5x binds it)
LOCAL_VOCAB = "local_spm_8k.model"
GCS_HOST = "storage.googleapis.com"
_choice: str | None = None


class VocabularyError(ValueError):
  """The chosen vocabulary cannot be loaded (one line for the CLI to print)."""


def set_vocabulary(spec: str | None) -> None:
  """flan_t5 | local | a path; None resets to $SYMBOL_TUNING_VOCAB / flan_t5."""
  global _choice
  _choice = spec
  resolve.cache_clear()  # also when unchanged: $SYMBOL_TUNING_VOCAB may have changed


def current_spec() -> str:
  return _choice or os.environ.get("SYMBOL_TUNING_VOCAB") or "flan_t5"


def _reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
  """Whether a TCP connection to host:port opens within `timeout` seconds. Runs in a daemon
  thread because a DNS lookup without a resolver can block far longer than any timeout."""
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result)


def _check_gcs(spec: str, path: str) -> None:
  """Fails in seconds, with what to do, where TensorFlow's GCS client would retry for about
  80 s and then raise a traceback about www.googleapis.com."""
  if not _reachable(GCS_HOST):
    raise VocabularyError(
        f"vocabulary {spec!r} is read from {path}, but Google Cloud Storage ({GCS_HOST}) "
        "cannot be reached from here: pass --vocab local (the 8k model shipped in the "
        "package, for CPU runs) or --vocab PATH to a local copy of that .model file "
        "(also $SYMBOL_TUNING_VOCAB; in gin: VOCABULARY_NAME)")


@functools.cache
def _make(spec: str) -> seqio.Vocabulary:
  """The vocabulary for `spec`, loaded now so that a missing file fails here, not later
  inside a tf.data worker."""
  if spec == "flan_t5":
    _check_gcs(spec, FLAN_T5_VOCAB)
    vocabulary = seqio.SentencePieceVocabulary(FLAN_T5_VOCAB, extra_ids=FLAN_T5_EXTRA_IDS)
  elif spec == "local":
    vocabulary = seqio.SentencePieceVocabulary(str(resources.assets_dir() / LOCAL_VOCAB))
  elif spec.startswith("gs://"):
    _check_gcs(spec, spec)
    vocabulary = seqio.SentencePieceVocabulary(spec)
  elif not os.path.exists(spec):
    raise VocabularyError(f"vocabulary {spec!r}: no such file (use flan_t5, local, a path to "
                          "a sentencepiece .model or a HF tokenizer.json / its dir)")
  else:
    from symbol_tuning import hf_vocab  # pylint: disable=g-import-not-at-top
    if hf_vocab.is_hf_tokenizer(spec):
      return hf_vocab.HFTokenizerVocabulary(spec)
    vocabulary = seqio.SentencePieceVocabulary(spec)
  try:
    vocabulary.tokenizer  # pylint: disable=pointless-statement  (reads the model file)
  except Exception as e:  # pylint: disable=broad-except  (sentencepiece / TF I/O errors)
    raise VocabularyError(f"vocabulary {spec!r}: cannot load the sentencepiece model: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
  return vocabulary


@functools.cache
def resolve() -> seqio.Vocabulary:
  return _make(current_spec())


def use_vocabulary(spec: str | None = None) -> seqio.Vocabulary:
  """The model vocabulary for t5x's gin files (`VOCABULARY = @symbol_tuning.vocab.use_vocabulary()`):
  makes `spec` (flan_t5 | local | path; None keeps $SYMBOL_TUNING_VOCAB, else flan_t5) the
  choice of the tasks too, and returns it, so the model and the tasks' output features can
  never disagree.

  use_vocabulary('local').vocab_size -> 8000 (the shipped model)
  """
  if spec is not None:
    set_vocabulary(spec)
  return resolve()


class LazyVocabulary(seqio.Vocabulary):
  """Delegates to the vocabulary chosen by `current_spec()` when first used."""

  def __init__(self):
    super().__init__(extra_ids=0)

  @property
  def _real(self) -> seqio.Vocabulary:
    return resolve()

  @property
  def eos_id(self):
    return self._real.eos_id

  @property
  def pad_id(self):
    return self._real.pad_id

  @property
  def unk_id(self):
    return self._real.unk_id

  @property
  def _base_vocab_size(self):
    return self._real.vocab_size

  @property
  def vocab_size(self):
    return self._real.vocab_size

  def _encode(self, s):
    return self._real.encode(s)

  def _decode(self, ids):
    return self._real.decode(ids)

  def _encode_tf(self, s):
    return self._real.encode_tf(s)

  def _decode_tf(self, ids):
    return self._real.decode_tf(ids)

  def encode(self, s):
    return self._real.encode(s)

  def decode(self, ids):
    return self._real.decode(ids)

  def encode_tf(self, s):
    return self._real.encode_tf(s)

  def decode_tf(self, ids):
    return self._real.decode_tf(ids)

  def __eq__(self, other):
    return isinstance(other, LazyVocabulary) or self._real == other

  def __hash__(self):
    return hash("symbol_tuning.LazyVocabulary")


class TokenCounter:
  """text -> number of tokens (no EOS); remembers the last text's ids, so the prompt that
  was counted last (the final one) need not be tokenized again."""

  def __init__(self, vocabulary: seqio.Vocabulary | None = None):
    real = vocabulary._real if isinstance(vocabulary, LazyVocabulary) else (
        vocabulary or resolve())
    self._encode = real.tokenizer.EncodeAsIds  # sentencepiece, no TF in the loop
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
  Python ints. `composable` says whether this vocabulary tokenizes whitespace-joined
  texts as the concatenation of their tokens (true for T5's sentencepiece models, which
  split on whitespace and turn newlines into spaces); PromptBuilder checks it on real
  prompts before relying on it.
  """

  def __init__(self, vocabulary: seqio.Vocabulary | None = None):
    real = vocabulary._real if isinstance(vocabulary, LazyVocabulary) else (
        vocabulary or resolve())
    self._encode = real.tokenizer.EncodeAsIds
    self._model = getattr(real, "sp_model", None)  # keys the on-disk token cache
    self._memo: dict[str, array.array] = {}

  def __call__(self, text: str) -> array.array:
    ids = self._memo.get(text)
    if ids is None:
      ids = self._memo[text] = array.array("i", self._encode(text))
    return ids

  def prime(self, texts: Sequence[str]) -> None:
    """Memoises the ids of `texts` (a dataset's examples) in one go, from the on-disk
    token cache when this vocabulary has tokenized the same texts before (in any
    process), so building prompts never waits on the tokenizer."""
    for text, ids in zip(texts, token_ids(tuple(texts), self._model, self._encode)):
      self._memo.setdefault(text, ids)

  def encode_full(self, text: str) -> list[int]:
    return self._encode(text)


_TOKEN_CACHE_VERSION = 1
_token_ids_in_process: dict[str, list[array.array]] = {}


def token_ids(texts: tuple[str, ...], model: bytes | None, encode) -> list[array.array]:
  """The ids of every text, cached in this process and on disk under
  $SYMBOL_TUNING_CACHE/token_ids/ (keyed by the sentencepiece model and the texts).

  Example: token_ids(("a dog", "a cat"), spm_bytes, spm.EncodeAsIds)
    -> [array('i', [3, 71]), array('i', [3, 420])]; a second call, here or in another
    process, reads them back instead of tokenizing again. Without a model (a vocabulary
    that is not sentencepiece) nothing is written to disk.
  """
  digest = hashlib.blake2b(digest_size=16)
  digest.update(f"v{_TOKEN_CACHE_VERSION}\x1f".encode() + (model or b"") + b"\x1f")
  for text in texts:
    digest.update(text.encode() + b"\x1e")
  key = digest.hexdigest()
  cached = _token_ids_in_process.get(key)
  if cached is not None:
    return cached
  path = resources.cache_dir() / "token_ids" / f"{key}.npz"
  flat = offsets = None
  if model is not None and path.is_file():
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
    if model is not None:
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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      np.savez(f, ids=flat, offsets=offsets)
    os.replace(tmp, path)  # readers never see a partial file
  except OSError as e:  # a read-only cache only costs speed
    print(f"symbol_tuning: token cache not written ({e})", file=sys.stderr)


def train(out: str, vocab_size: int = 8000) -> None:
  """Trains the local model on the BIG-bench suite's text (inputs and labels)."""
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  from symbol_tuning import catalogue, sources  # pylint: disable=g-import-not-at-top

  lines = []
  for entry in catalogue.load("bigbench"):
    for split in ("train", "validation"):
      lines += [ex.text for ex in sources.load_split(entry, split).examples]
    lines += list(entry.labels)
  text = "\n".join(line.replace("\n", " ") for line in lines)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(text.splitlines()), model_writer=model, vocab_size=vocab_size,
      model_type="unigram", character_coverage=0.9995, pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, input_sentence_size=200_000, shuffle_input_sentence=True, seed_sentencepiece_size=200_000,
      num_threads=1, minloglevel=2)
  with open(out, "wb") as f:
    f.write(model.getvalue())
  print(f"wrote {out} ({len(model.getvalue())} bytes, {vocab_size} pieces)", file=sys.stderr)


if __name__ == "__main__":
  if sys.argv[1:2] != ["train"]:
    sys.exit("usage: python -m symbol_tuning.vocab train [OUT]")
  train(sys.argv[2] if len(sys.argv) > 2 else str(resources.assets_dir() / LOCAL_VOCAB))
