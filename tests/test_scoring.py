"""Scoring, for every model family: fast rank classification (T5: encoder once; decoder-only:
the prompt's KV cache) == the repeated-prompt recipe, greedy decoding == step-by-step full
passes, exact-match normalisation, seqio metric functions, checkpoints of every format."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from symbol_tuning.data import metrics
from symbol_tuning.evaluation import scoring
from symbol_tuning.models import registry
from symbol_tuning.models.decoder import inference as decoder_inference
from symbol_tuning.models.t5 import network

VOCAB = 8000  # the shipped local sentencepiece model's size


@functools.lru_cache(maxsize=None)
def tiny() -> scoring.Model:
  return scoring.load_model("random:tiny", vocab_size=VOCAB)


def synthetic_requests(n=7, seed=0, lengths=(33, 64), decode=None):
  """Prompts of 33..64 tokens (one length bucket) with 2 or 3 options of 1..5 tokens."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    ids = [int(t) for t in rng.integers(3, VOCAB, int(rng.integers(*lengths)) - 1)] + [1]
    num_options = 2 + i % 2
    options = [[int(t) for t in rng.integers(3, VOCAB, int(rng.integers(1, 6)))] + [1]
               for _ in range(num_options)]
    out.append(scoring.Request(ids, options, decode))
  return out


def test_bucket_rounds_up_to_powers_of_two():
  assert [scoring.bucket(n, 32) for n in (1, 32, 33, 64, 65, 2047)] == [32, 32, 64, 64, 128, 2048]
  assert scoring.bucket(0, 4) == 4 and scoring.bucket(5) == 8


def test_one_batch_size_per_length_bucket_docstring_example():
  """Scorer.batches: groups of 3 and 19 prompts -> one batch of 4; three of 8 (the last
  padded): one shape per group, longest prompts first."""
  scorer = scoring.Scorer(scoring.load_model("random:tiny"), batch_size=8)
  requests = [scoring.Request([5] * n) for n in [40] * 3 + list(range(100, 119))]
  batches = list(scorer.batches(requests, lambda r: (scoring.bucket(len(r.input_ids), 32),)))
  assert [(k, size, len(members)) for k, size, members in batches] == [
      ((64,), 4, 3), ((128,), 8, 8), ((128,), 8, 8), ((128,), 8, 3)]
  assert batches[1][2][0] == len(requests) - 1  # the longest prompt leads its bucket


@functools.lru_cache(maxsize=None)
def decoder(name: str, **overrides) -> scoring.Model:
  """The decoder-only config `name` with `overrides`, all weights perturbed (a random init
  leaves the biases 0 and the norms 1). Gemma's embeddings (scaled up by sqrt(d_model) on
  the way in, tied logits on the way out) are scaled down by as much: at the init's unit
  scale the model is so sure of its tokens that scores reach -230, where float32 numbers
  lie 1.5e-5 apart and no two summation orders agree to 1e-5."""
  config = scoring.load_model(f"random:{name}:3").config.replace(**overrides)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda p: jnp.asarray(np.asarray(p) + 0.1 * rng.standard_normal(p.shape).astype(np.float32)),
      registry.init_params(config, 3))
  if config.embed_scale:
    embedder = params["decoder"]["token_embedder"]
    embedder["embedding"] = embedder["embedding"] / np.sqrt(config.d_model)
  return scoring.Model(config, params, "test")


# llama-tiny with biases and QK-norm on: no window.
llama = functools.partial(decoder, "llama-tiny", qkv_bias=True, qk_norm=True)


def decoder_requests(n, seed, decode=5, lengths=(3, 60)):
  """Prompts of 3..59 tokens (two length buckets), 2 or 3 options of 1..5 tokens, id 0 (a
  real token in some decoder vocabularies) included."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    prompt = rng.integers(1, 512, int(rng.integers(*lengths))).tolist()
    options = [rng.integers(0, 512, int(rng.integers(1, 6))).tolist()
               for _ in range(int(rng.integers(2, 4)))]
    out.append(scoring.Request(prompt, options, max_decode_len=decode))
  return out


def windowed_requests(seed):
  return (decoder_requests(1, seed + 7, lengths=(2, 4))
          + decoder_requests(10, seed, lengths=(5, 32)))


# family -> (model, requests(seed), naive recipe's padded prompt length (None: the longest
# prompt's bucket)): T5's prompts end with EOS and its options never hold id 0 (it ends a
# T5 target).
CASES = {"t5": (tiny, lambda seed: synthetic_requests(7, seed), 128),
         "decoder": (llama, lambda seed: decoder_requests(11, seed), None)}
# Sliding windows (mistral: window 4 on every layer; gemma2: a local and a global layer;
# gemma3: two local layers with their own RoPE base, then a global one). One prompt of 2
# or 3 tokens (under the window: part of its cache stays padding), ten of 5..31 (one
# bucket, up to 8 windows: prefill writes only their last 4 positions to the local layers'
# cache); options and decoding read and extend it from there.
WINDOWED = {f"decoder-{name}": functools.partial(decoder, f"{name}-tiny")
            for name in ("mistral", "gemma2", "gemma3")}
CASES.update({name: (model, lambda seed: windowed_requests(seed), None)
              for name, model in WINDOWED.items()})


def test_every_family_has_a_scoring_case():
  assert set(registry.FAMILIES) <= set(CASES)


@pytest.mark.parametrize("family", sorted(CASES))
def test_fast_scores_equal_naive_repeated_prompt_scores(family):
  # 7 / 11 prompts with batch size 4: the last batch has an all-padding row; 2- and
  # 3-option prompts go to separate groups; the naive recipe pads every row to one length.
  model, make, fixed_length = CASES[family]
  requests = make(0)
  scorer = scoring.Scorer(model(), batch_size=4)
  fast = scorer.rank(requests)
  naive = scorer.rank_naive(requests, fixed_length=fixed_length)
  assert [len(s) for s in fast] == [len(r.options) for r in requests]
  for a, b in zip(fast, naive):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  # The bucketed naive path agrees too (other paddings and batch compositions).
  for a, b in zip(fast, scorer.rank_naive(requests, bucketed=True)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  # Real log-likelihoods: negative, and they differ between options.
  assert all((s < 0).all() and len(set(np.round(s, 3))) == len(s) for s in fast)
  # Scores do not depend on what else is in the batch.
  alone = scorer.rank(requests[:1])
  np.testing.assert_allclose(alone[0], fast[0], atol=1e-5, rtol=0)


def _reference_greedy(model: scoring.Model, ids, steps, limit):
  """Greedy decoding by full (uncached) causal forward passes: the cache loop must agree."""
  module = network.Transformer(model.config)
  forward = jax.jit(lambda params, enc, dec: module.apply(
      {"params": params}, enc, dec, jnp.ones_like(dec), enable_dropout=False))
  enc = jnp.asarray([ids], jnp.int32)
  dec = np.zeros((1, steps), np.int32)  # later positions cannot affect earlier ones (causal)
  out = []
  for t in range(steps):
    logits = forward(model.params, enc, jnp.asarray(dec))
    token = int(jnp.argmax(logits[0, t, :limit]))
    out.append(token)
    if token == 1 or t + 1 == steps:
      break
    dec[0, t + 1] = token
  return out


def test_greedy_decoding_with_cache_matches_full_forward_passes():
  requests = synthetic_requests(n=3, seed=1, decode=5)
  scorer = scoring.Scorer(tiny(), batch_size=4, vocab_limit=VOCAB)
  outputs = scorer.run(requests)
  for request, out in zip(requests, outputs):
    expected = _reference_greedy(tiny(), request.input_ids, 5, VOCAB)
    if 1 in expected:
      expected = expected[:expected.index(1)]
    assert out.tokens.tolist() == expected
    assert out.scores is not None and len(out.scores) == len(request.options)
    assert all(t < VOCAB for t in out.tokens)


@pytest.mark.parametrize("name", ["decoder"] + sorted(WINDOWED))
def test_decoder_greedy_decoding_from_the_cache_equals_step_by_step_full_passes(name):
  scorer = scoring.Scorer(CASES[name][0](), batch_size=4)
  assert isinstance(scorer.ops, decoder_inference.DecoderInference)
  requests = CASES[name][1](1)[:5]
  fast = scorer.run(requests)
  model = registry.family_of(scorer.config).module(scorer.config)
  # One compiled full pass over a right-padded row (causal: the padding changes nothing).
  forward = jax.jit(lambda tokens: model.apply({"params": scorer.params}, tokens,
                                               enable_dropout=False))
  for request, out in zip(requests, fast):
    sequence = list(request.input_ids)
    expected = []
    for _ in range(request.max_decode_len):
      row = np.zeros((1, 72), np.int32)
      row[0, :len(sequence)] = sequence
      token = int(jnp.argmax(forward(jnp.asarray(row))[0, len(sequence) - 1]))
      if token == scorer.eos_id:
        break
      expected.append(token)
      sequence.append(token)
    assert out.tokens.tolist() == expected


def test_left_padding_docstring_example():
  tokens, positions, valid = decoder_inference.left_pad([[5, 6], [7]], 3, 3)
  assert tokens.tolist() == [[0, 5, 6], [0, 0, 7], [0, 0, 0]]
  assert positions.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
  assert valid.astype(int).tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_exact_match_normalisation_strips_whitespace_and_keeps_case():
  assert metrics.normalize("  [1, 2]\n") == "[1, 2]"
  assert metrics.normalize(b" foo ") == "foo"
  assert metrics.is_exact_match(" positive ", "positive")
  assert not metrics.is_exact_match("Positive", "positive")  # case-sensitive by default
  assert metrics.is_exact_match("Positive", "positive", ignore_case=True)
  assert not metrics.is_exact_match("[1,2]", "[1, 2]")  # inner whitespace is kept
  assert not metrics.is_exact_match("", "''")
  assert metrics.exact_match(["a", "b", "C"], ["a ", "x", "c"]) == {"exact_match": pytest.approx(100 / 3)}
  assert metrics.exact_match([], []) == {"exact_match": 0.0}


def test_seqio_metric_functions():
  # Targets of rank twins carry the query, option and gold; scores pick the argmax per query.
  ex = lambda q, o, g: {"query": np.int32(q), "option": np.int32(o), "gold": np.int32(g)}
  targets = [metrics.postprocess("x", example=ex(q, o, g), is_target=True)
             for q, o, g in [(0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 1, 0), (1, 2, 0)]]
  assert targets[0] == {"query": 0, "option": 0, "gold": 1}
  scores = [-3.0, -1.0, -2.0, -0.5, -0.5]  # query 0 right; query 1 picks option 1 (tie: first)
  assert metrics.rank_classification(targets, scores) == {"rank_classification_accuracy": 50.0}
  assert metrics.rank_predictions(targets, scores) == {0: (1, 1), 1: (1, 0)}
  # Plain tasks: postprocess normalises predictions and targets alike.
  assert metrics.postprocess(b" 4242 ", example={"gold": 0}, is_target=True) == "4242"
  assert metrics.postprocess(" 4242", is_target=False) == "4242"


def test_random_model_spec_and_bad_checkpoint():
  model = scoring.load_model("random:tiny:3", vocab_size=VOCAB)
  assert model.config.vocab_size == 8064 and model.config.dropout_rate == 0.0
  embedding = lambda m: np.asarray(m.params["token_embedder"]["embedding"])
  assert not np.allclose(embedding(model), embedding(tiny()))  # the seed changes the weights
  with pytest.raises(ValueError, match="no such file"):
    scoring.load_model("/nonexistent/checkpoint", vocab_size=VOCAB)


@pytest.mark.parametrize("fmt", ["native", "hf"])
def test_saved_checkpoints_score_like_the_model_in_memory(tmp_path, fmt):
  from symbol_tuning.checkpoints import convert  # pylint: disable=import-outside-toplevel

  model = tiny()
  path = convert.save_any(model.config, model.params, str(tmp_path / fmt), fmt)
  loaded = scoring.load_model(path, vocab_size=VOCAB)
  assert loaded.config.vocab_size == model.config.vocab_size
  requests = synthetic_requests(n=2)
  want = scoring.Scorer(model, batch_size=4).rank(requests)
  got = scoring.Scorer(loaded, batch_size=4).rank(requests)
  for a, b in zip(want, got):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  small_vocab = model.config.vocab_size + 1
  with pytest.raises(ValueError, match="smaller than the tokenizer"):
    scoring.load_model(path, vocab_size=small_vocab)
