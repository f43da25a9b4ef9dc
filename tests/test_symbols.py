import collections
import random

import pytest

from symbol_tuning.data import catalogue, symbols


@pytest.mark.parametrize("n,s", [(1, "A"), (26, "Z"), (27, "AA"), (52, "AZ"), (703, "AAA"),
                                 (10_000, "NTP"), (10_001, "NTQ")])
def test_letters_bijective_base26(n, s):
  assert symbols.letters(n) == s
  assert symbols.letters_to_int(s) == n


def test_letters_rejects_zero():
  with pytest.raises(ValueError):
    symbols.letters(0)


def test_pool_sizes_match_the_paper():
  tune, ev = symbols.get_pool("tune"), symbols.get_pool("eval")
  # ~30k tuning symbols, ~270k evaluation symbols (SPEC section 2), less label words.
  assert 29_800 <= len(tune) <= 30_000
  assert 268_000 <= len(ev) <= 270_000
  assert len(tune.integers) == 10_000 and tune.integers[0] == "0" and tune.integers[-1] == "9999"
  # "A" and "B" are labels (hyperbaton), so the pool starts at "C".
  assert tune.letter_strings[0] == "C" and tune.letter_strings[-1] == "NTP"
  assert ev.integers[0] == "10000" and ev.integers[-1] == "99999"
  assert ev.letter_strings[0] == "NTQ"
  assert 9_800 <= len(tune.words) <= 10_000
  assert 85_000 <= len(ev.words) <= 90_000


def test_pools_are_disjoint():
  assert not symbols.get_pool("tune").all_symbols & symbols.get_pool("eval").all_symbols


def test_label_words_are_excluded_case_insensitively():
  words = catalogue.label_words()
  for word in ("yes", "no", "t", "f", "positive", "entailment", "not", "complaint"):
    assert word in words
  for name in symbols.POOLS:
    pool = symbols.get_pool(name)
    lowered = {s.lower() for s in pool.all_symbols}
    assert not lowered & words, sorted(lowered & words)[:10]
  assert "NO" not in symbols.get_pool("tune")  # a letter string that spells a label


def test_sampling_is_distinct_deterministic_and_uniform_over_kinds():
  pool = symbols.get_pool("tune")
  assert pool.sample(6, random.Random(3)) == pool.sample(6, random.Random(3))
  kinds = collections.Counter()
  rng = random.Random(0)
  for _ in range(3000):
    drawn = pool.sample(4, rng)
    assert len(set(drawn)) == 4 and all(s in pool for s in drawn)
    kinds.update(pool.kind_of(s) for s in drawn)
  for kind in symbols.KINDS:
    assert 0.30 < kinds[kind] / 12_000 < 0.37, kinds


def test_unknown_pool():
  with pytest.raises(ValueError, match="unknown symbol pool"):
    symbols.get_pool("train")
