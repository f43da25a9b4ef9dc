"""Symbol pools (SPEC section 2): integers, letter strings and words, tuning vs evaluation.

Tuning pool (~30k): integers 0-9999, letter strings 1..10000 (A .. NTP), the 10k most
common English words. Evaluation pool (~270k), disjoint from it: integers 10000-99999,
letter strings 10001..100000 (NTQ ..), English words of frequency rank 10k..100k.
Words come from the installed `wordfreq` package (no network). Both pools exclude every
natural label of every catalogued dataset, case-insensitively, so "YES", "NO" and "T"
never appear as symbols.

Sampling is a pure function of a `random.Random`: per label, a kind uniformly at random,
then a symbol of that kind uniformly at random, all symbols of a prompt distinct.
"""
import dataclasses
import functools
import random
import re

from symbol_tuning.data import catalogue

KINDS = ("integer", "letters", "word")
POOLS = ("tune", "eval")

_TUNE_WORDS = 10_000
_EVAL_WORD_RANK = 100_000
_WORD_RE = re.compile(r"[a-z]+")


def letters(n: int) -> str:
  """Bijective base-26 numeral: 1 -> 'A', 26 -> 'Z', 27 -> 'AA', 10000 -> 'NTP'."""
  if n < 1:
    raise ValueError(f"letter strings start at 1, got {n}")
  out = []
  while n:
    n, rem = divmod(n - 1, 26)
    out.append(chr(ord("A") + rem))
  return "".join(reversed(out))


def letters_to_int(s: str) -> int:
  """Inverse of `letters`: 'A' -> 1, 'NTP' -> 10000."""
  n = 0
  for ch in s:
    n = n * 26 + (ord(ch) - ord("A") + 1)
  return n


@dataclasses.dataclass(frozen=True)
class SymbolPool:
  """A pool of symbols of three kinds, with the excluded ones removed."""

  name: str  # tune | eval
  integers: tuple[str, ...]  # decimal strings
  letter_strings: tuple[str, ...]  # bijective base-26, uppercase
  words: tuple[str, ...]  # lowercase English words

  def by_kind(self, kind: str) -> tuple[str, ...]:
    return {"integer": self.integers, "letters": self.letter_strings, "word": self.words}[kind]

  def __len__(self) -> int:
    return len(self.integers) + len(self.letter_strings) + len(self.words)

  @functools.cached_property
  def all_symbols(self) -> frozenset[str]:
    return frozenset(self.integers + self.letter_strings + self.words)

  def __contains__(self, symbol: str) -> bool:
    return symbol in self.all_symbols

  @staticmethod
  def kind_of(symbol: str) -> str:
    if symbol.isdigit():
      return "integer"
    return "letters" if symbol.isupper() else "word"

  def sample(self, n: int, rng: random.Random) -> list[str]:
    """n distinct symbols; each label's kind is drawn uniformly from the three kinds."""
    chosen: list[str] = []
    seen = set()
    while len(chosen) < n:
      kind = KINDS[rng.randrange(len(KINDS))]
      pool = self.by_kind(kind)
      symbol = pool[rng.randrange(len(pool))]
      if symbol not in seen:  # redraw on a clash; with pools this large it is rare
        seen.add(symbol)
        chosen.append(symbol)
    return chosen


def _english_words() -> list[str]:
  """English words by frequency rank, letters only (no digits, apostrophes or hyphens)."""
  import wordfreq  # pylint: disable=g-import-not-at-top

  ranked = wordfreq.top_n_list("en", _EVAL_WORD_RANK + 20_000, wordlist="best")
  return [w for w in ranked if _WORD_RE.fullmatch(w)]


def _keep(symbols, excluded: frozenset[str]) -> tuple[str, ...]:
  return tuple(s for s in symbols if s.lower() not in excluded)


@functools.cache
def get_pool(name: str) -> SymbolPool:
  """The tuning or evaluation pool, built once per process (about 0.3 s)."""
  if name not in POOLS:
    raise ValueError(f"unknown symbol pool {name!r}; known: {POOLS}")
  excluded = catalogue.label_words()
  words = _english_words()
  if name == "tune":
    ints, lets, ws = range(0, 10_000), range(1, 10_001), words[:_TUNE_WORDS]
  else:
    ints, lets = range(10_000, 100_000), range(10_001, 100_001)
    tune_words = set(words[:_TUNE_WORDS])
    ws = [w for w in words[_TUNE_WORDS:_EVAL_WORD_RANK] if w not in tune_words]
  return SymbolPool(
      name=name,
      integers=_keep((str(i) for i in ints), excluded),
      letter_strings=_keep((letters(i) for i in lets), excluded),
      words=_keep(ws, excluded),
  )
