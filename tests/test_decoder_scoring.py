"""Decoder-only rank classification from the prompt's KV cache equals the naive recipe."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from symbol_tuning.evaluation import scoring  # noqa: E402
from symbol_tuning.models import registry  # noqa: E402
from symbol_tuning.models.decoder import inference as decoder_scoring  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402


@pytest.fixture(scope="module")
def scorer():
  model = scoring.load_model("random:llama-tiny:3")
  # Biases and QK-norm on too, with non-trivial values: a random init leaves them 0 / 1.
  config = model.config.replace(qkv_bias=True, qk_norm=True)
  params = registry.init_params(config, 3)
  rng = np.random.default_rng(0)
  params = jax_tree_map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
                        params)
  return scoring.Scorer(scoring.Model(config, params, "test"), batch_size=4)


def jax_tree_map(fn, tree):
  return jax.tree.map(lambda x: jnp.asarray(fn(np.asarray(x))), tree)


def _requests(n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    prompt = rng.integers(1, 512, int(rng.integers(3, 60))).tolist()  # two length buckets
    options = [rng.integers(0, 512, int(rng.integers(1, 6))).tolist()  # id 0 included
               for _ in range(int(rng.integers(2, 4)))]
    out.append(scoring.Request(prompt, options, max_decode_len=5))
  return out


def test_scores_from_the_kv_cache_equal_full_forward_passes(scorer):
  assert isinstance(scorer.ops, decoder_scoring.DecoderInference)
  requests = _requests(11, 0)  # partial batches, different option counts and lengths
  fast = scorer.run(requests)
  naive = scorer.rank_naive(requests)
  for out, ref in zip(fast, naive):
    np.testing.assert_allclose(out.scores, ref, atol=1e-5)
  # The bucketed naive path agrees too (left vs right padding, other batch compositions).
  for out, ref in zip(fast, scorer.rank_naive(requests, bucketed=True)):
    np.testing.assert_allclose(out.scores, ref, atol=1e-5)


def test_greedy_decoding_from_the_cache_equals_step_by_step_full_passes(scorer):
  requests = _requests(5, 1)
  fast = scorer.run(requests)
  model = decoder_network.DecoderOnlyTransformer(scorer.config)
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
  tokens, positions, valid = decoder_scoring.left_pad([[5, 6], [7]], 3, 3)
  assert tokens.tolist() == [[0, 5, 6], [0, 0, 7], [0, 0, 0]]
  assert positions.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
  assert valid.astype(int).tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
