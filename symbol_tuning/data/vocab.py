"""Vocabularies for the tasks' output features.

`SYMBOL_TUNING_VOCAB` (or `set_vocabulary`, or the CLI's --vocab) picks one:
  flan_t5 (default)  Flan-T5's sentencepiece model on GCS, as t5x binds it (32k pieces + 100
                     ids, vocab_size 32128). Needs GCS access, e.g. on a Cloud TPU VM.
  local              a 8k-piece model shipped in the package, trained offline on the BIG-bench
                     suite's text (T5 layout: pad 0, eos 1, unk 2). For CPU runs and tests.
  <path>             any sentencepiece .model file (e.g. a local copy of Flan-T5's, or one on
                     gs://, copied into SYMBOL_TUNING_CACHE), or a
                     HF tokenizer.json / a model directory holding one (decoder-only
                     models; symbol_tuning.data.hf_vocab).
Tasks are registered with a `LazyVocabulary` that resolves the choice at first use, so the
choice can be made after `import symbol_tuning.data.tasks` (e.g. from gin or the CLI).

Rebuild the local model: python -m symbol_tuning.data.vocab train  (reads the BIG-bench suite)
"""
import functools
import hashlib
import os
import socket
import sys
import threading

import seqio

from symbol_tuning import paths, settings
from symbol_tuning.data import tokens

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
  return _choice or settings.vocabulary_spec() or "flan_t5"


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


def _local_copy(spec: str) -> str:
  """A gs:// model file copied into the cache, read through etils.epath as every gs:// path
  is (seqio would read it through TF's gfile); a missing file or an unreachable bucket is
  one line within settings.storage_timeout() seconds. Each process makes its own copy."""
  try:
    data = paths.call_bounded(lambda: paths.path(spec).read_bytes(),
                              f"vocabulary {spec!r} cannot be read", settings.storage_timeout())
  except paths.StoragePathError as e:
    raise VocabularyError(f"{e}; pass --vocab local or a local copy of the file") from None
  dest = (settings.cache_dir() / "vocab" / hashlib.sha256(spec.encode()).hexdigest()[:16]
          / os.path.basename(spec))
  dest.parent.mkdir(parents=True, exist_ok=True)
  tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, dest)  # atomic: another process may be reading the previous copy
  return str(dest)


@functools.cache
def _make(spec: str) -> seqio.Vocabulary:
  """The vocabulary for `spec`, loaded now so that a missing file fails here, not later
  inside a tf.data worker."""
  if spec == "flan_t5":
    _check_gcs(spec, FLAN_T5_VOCAB)
    vocabulary = seqio.SentencePieceVocabulary(FLAN_T5_VOCAB, extra_ids=FLAN_T5_EXTRA_IDS)
  elif spec == "local":
    vocabulary = seqio.SentencePieceVocabulary(str(settings.assets_dir() / LOCAL_VOCAB))
  elif spec.startswith("gs://"):
    vocabulary = seqio.SentencePieceVocabulary(_local_copy(spec))
  elif not os.path.exists(spec):
    raise VocabularyError(f"vocabulary {spec!r}: no such file (use flan_t5, local, a path to "
                          "a sentencepiece .model or a HF tokenizer.json / its dir)")
  else:
    from symbol_tuning.data import hf_vocab  # pylint: disable=g-import-not-at-top
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
  """The model vocabulary for t5x's gin files (`VOCABULARY = @symbol_tuning.data.vocab.use_vocabulary()`):
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


def tokenizer_of(vocabulary: seqio.Vocabulary | None = None) -> tokens.Tokenizer:
  """The portable tokenizer of a vocabulary (default: the chosen one), sharing its loaded
  processor; prompt worker processes rebuild it from the model bytes / file path."""
  real = vocabulary._real if isinstance(vocabulary, LazyVocabulary) else (
      vocabulary or resolve())
  if isinstance(real.tokenizer, tokens.Tokenizer):  # hf_vocab.HFTokenizerVocabulary's own
    return real.tokenizer
  return tokens.Tokenizer("sentencepiece", real.sp_model, real.tokenizer)


class TokenCounter(tokens.TokenCounter):
  """tokens.TokenCounter of a seqio vocabulary (default: the chosen one)."""

  def __init__(self, vocabulary: seqio.Vocabulary | None = None):
    super().__init__(tokenizer_of(vocabulary))


class PieceEncoder(tokens.PieceEncoder):
  """tokens.PieceEncoder of a seqio vocabulary (default: the chosen one)."""

  def __init__(self, vocabulary: seqio.Vocabulary | None = None):
    super().__init__(tokenizer_of(vocabulary))


def train(out: str, vocab_size: int = 8000) -> None:
  """Trains the local model on the BIG-bench suite's text (inputs and labels)."""
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import catalogue, sources  # pylint: disable=g-import-not-at-top

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
    sys.exit("usage: python -m symbol_tuning.data.vocab train [OUT]")
  train(sys.argv[2] if len(sys.argv) > 2 else str(settings.assets_dir() / LOCAL_VOCAB))
