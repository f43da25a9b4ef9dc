"""The decoder-only network: KV cache, packing, prefix attention, sharding, family interface."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from symbol_tuning.models import registry as family  # noqa: E402
from symbol_tuning.models.decoder import inference  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402
from symbol_tuning.models.decoder.config import DecoderConfig, get_config  # noqa: E402
from symbol_tuning.training import partitioning  # noqa: E402

# GQA (4 query heads on 2 kv heads), biases, QK-norm and soft-capping all on.
CFG = get_config("llama-tiny", qkv_bias=True, out_bias=True, qk_norm=True,
                 attn_logit_softcap=30.0, final_logit_softcap=20.0)


@pytest.fixture(scope="module")
def params():
  return family.init_params(CFG, 0)


def _apply(params, tokens, **kwargs):
  model = decoder_network.DecoderOnlyTransformer(CFG)
  return model.apply({"params": params}, jnp.asarray(tokens), enable_dropout=False, **kwargs)


def test_cached_prefill_then_steps_equals_full_forward(params):
  tokens = np.random.default_rng(0).integers(1, CFG.vocab_size, size=(2, 12))
  full = _apply(params, tokens)
  model = decoder_network.DecoderOnlyTransformer(CFG)
  cache = inference.init_cache(CFG, batch=2, max_decode_length=12)
  pieces = []
  for start, stop in ((0, 7), (7, 8), (8, 9), (9, 12)):  # a prompt, two steps, a chunk
    out, mutated = model.apply({"params": params, "cache": cache}, jnp.asarray(tokens[:, start:stop]),
                               enable_dropout=False, decode=True, mutable=["cache"])
    cache = mutated["cache"]
    pieces.append(out)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_packed_segments_equal_separate_examples(params):
  """Two examples packed in one row (segment ids, positions restarting) give each
  example's own logits; the trailing padding (segment 0) changes nothing."""
  rng = np.random.default_rng(1)
  a, b = rng.integers(1, CFG.vocab_size, size=5), rng.integers(1, CFG.vocab_size, size=4)
  row = np.concatenate([a, b, [0, 0]])[None]
  segments = np.array([[1] * 5 + [2] * 4 + [0, 0]])
  positions = np.array([list(range(5)) + list(range(4)) + [0, 0]])
  packed = _apply(params, row, decoder_segment_ids=jnp.asarray(segments),
                  decoder_positions=jnp.asarray(positions))
  np.testing.assert_allclose(packed[0, :5], _apply(params, a[None])[0], atol=1e-5)
  np.testing.assert_allclose(packed[0, 5:9], _apply(params, b[None])[0], atol=1e-5)


def test_prefix_attention_is_bidirectional_over_the_prefix_only(params):
  tokens = np.random.default_rng(2).integers(1, CFG.vocab_size, size=(1, 8))
  changed = tokens.copy()
  changed[0, 3] = (changed[0, 3] % (CFG.vocab_size - 1)) + 1  # a later prefix token
  prefix = jnp.asarray([[1, 1, 1, 1, 0, 0, 0, 0]])
  causal = [np.asarray(_apply(params, t)) for t in (tokens, changed)]
  prefix_lm = [np.asarray(_apply(params, t, decoder_causal_attention=prefix))
               for t in (tokens, changed)]
  np.testing.assert_array_equal(causal[0][0, :3], causal[1][0, :3])  # causal: no look-ahead
  assert np.abs(prefix_lm[0][0, :3] - prefix_lm[1][0, :3]).max() > 1e-3  # prefix sees ahead


def test_every_parameter_has_logical_axes_and_shards_like_t5(params):
  """Every dimension carries a logical name; on a (data 2, model 4) mesh with the
  T5 path's rules the sharded forward pass equals the single-device one."""
  axes = family.get_logical_axes(CFG)
  shapes = family.param_shapes(CFG)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  for spec, shape in zip(jax.tree.leaves(axes, is_leaf=is_spec), jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape) and all(name is not None for name in spec), spec
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (fake) devices")
  mesh = partitioning.make_mesh(data=2, model=4)
  rules, _ = partitioning.fit_rules(mesh, axes, shapes)
  shardings = partitioning.logical_to_shardings(mesh, axes, rules)
  sharded_params = jax.device_put(params, shardings)
  wi_0 = sharded_params["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert tuple(wi_0.sharding.spec) == (None, "model")
  tokens = jnp.asarray(np.random.default_rng(3).integers(1, CFG.vocab_size, size=(4, 6)))
  model = decoder_network.DecoderOnlyTransformer(CFG)

  @jax.jit
  def forward(p, t):
    from flax import linen as nn  # pylint: disable=g-import-not-at-top
    with nn.logical_axis_rules(rules):
      return model.apply({"params": p}, t, enable_dropout=False)

  with jax.set_mesh(mesh):
    sharded = forward(sharded_params, jax.device_put(tokens, partitioning.batch_sharding(mesh)))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(_apply(params, tokens)), atol=1e-5)


def test_family_interface_dispatches_on_the_config():
  t5 = family.get_config("tiny")
  assert family.family_of(t5).name == "t5" and family.family_of(CFG).name == "decoder"
  assert family.config_from_dict(CFG.to_dict()) == CFG
  assert family.config_from_dict(t5.to_dict()) == t5
  assert "decoder" in family.param_shapes(CFG) and "encoder" in family.param_shapes(t5)
  with pytest.raises(ValueError, match="llama-tiny"):
    family.get_config("no-such-model")


def test_config_rejects_impossible_shapes():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    DecoderConfig(num_heads=6, num_kv_heads=4)
  with pytest.raises(ValueError, match="rope_type 'dynamic' is not supported"):
    DecoderConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
