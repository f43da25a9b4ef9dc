"""Tests of the T5 v1.1 network: t5x layout, packing, decode cache, dtypes."""
import functools
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import traverse_util  # noqa: E402

from symbol_tuning.models.registry import (get_logical_axes, init_params,  # noqa: E402
                                           param_shapes)
from symbol_tuning.models.t5 import network  # noqa: E402
from symbol_tuning.models.t5.config import CONFIGS, T5Config, get_config  # noqa: E402
from symbol_tuning.models.t5.inference import init_cache  # noqa: E402
from symbol_tuning.models.t5.network import Transformer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny():
  cfg = get_config("tiny", dropout_rate=0.0)
  return cfg, init_params(cfg, jax.random.PRNGKey(0))


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep="/")


def _expected_tiny_paths(cfg):
  d, inner, mlp, v = cfg.d_model, cfg.inner_dim, cfg.mlp_dim, cfg.vocab_size
  h, nb = cfg.num_heads, cfg.relative_attention_num_buckets
  attn = {"query/kernel": (d, inner), "key/kernel": (d, inner),
          "value/kernel": (d, inner), "out/kernel": (inner, d)}
  mlp_ = {"wi_0/kernel": (d, mlp), "wi_1/kernel": (d, mlp), "wo/kernel": (mlp, d)}
  out = {"token_embedder/embedding": (v, d),
         "encoder/relpos_bias/rel_embedding": (h, nb),
         "encoder/encoder_norm/scale": (d,),
         "decoder/relpos_bias/rel_embedding": (h, nb),
         "decoder/decoder_norm/scale": (d,),
         "decoder/logits_dense/kernel": (d, v)}
  for i in range(2):
    e, dd = f"encoder/layers_{i}", f"decoder/layers_{i}"
    out[f"{e}/pre_attention_layer_norm/scale"] = (d,)
    out[f"{e}/pre_mlp_layer_norm/scale"] = (d,)
    out.update({f"{e}/attention/{k}": s for k, s in attn.items()})
    out.update({f"{e}/mlp/{k}": s for k, s in mlp_.items()})
    for norm in ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
                 "pre_mlp_layer_norm"):
      out[f"{dd}/{norm}/scale"] = (d,)
    for block in ("self_attention", "encoder_decoder_attention"):
      out.update({f"{dd}/{block}/{k}": s for k, s in attn.items()})
    out.update({f"{dd}/mlp/{k}": s for k, s in mlp_.items()})
  return out


def test_param_tree_is_t5x_layout(tiny):
  cfg, params = tiny
  flat = _flat(params)
  expected = _expected_tiny_paths(cfg)
  assert set(flat) == set(expected)
  for name, shape in expected.items():
    assert flat[name].shape == shape, name
    assert flat[name].dtype == jnp.float32, name
  # Layer norms start at one; the query init carries 1/sqrt(head_dim).
  np.testing.assert_array_equal(flat["encoder/encoder_norm/scale"], 1.0)
  q = np.asarray(flat["encoder/layers_0/attention/query/kernel"])
  k = np.asarray(flat["encoder/layers_0/attention/key/kernel"])
  assert q.std() < k.std() / 2


def test_logits_via_embedding_has_no_logits_dense():
  cfg = get_config("tiny", logits_via_embedding=True)
  assert "decoder/logits_dense/kernel" not in _flat(param_shapes(cfg))


def test_named_configs_have_flan_t5_sizes():
  # Parameter counts of google/flan-t5-{small,...,xxl}.
  counts = {"small": 76_961_152, "large": 783_150_080, "xxl": 11_135_332_352}
  # (base: 247_577_856, xl: 2_849_757_184; left out to keep the test fast.)
  for name, count in counts.items():
    shapes = jax.tree.leaves(param_shapes(get_config(name)))
    assert sum(int(np.prod(s.shape)) for s in shapes) == count, name


def test_config_api():
  with pytest.raises(ValueError, match="tiny, small, base, large, xl, xxl"):
    get_config("huge")
  with pytest.raises(ValueError, match="unknown T5Config field"):
    get_config("tiny", d_modle=3)
  with pytest.raises(ValueError, match="dtype"):
    T5Config(dtype="float16")
  cfg = get_config("flan-t5-xl", dropout_rate=0.05, dtype="bfloat16")
  assert (cfg.d_model, cfg.num_heads, cfg.mlp_dim) == (2048, 32, 5120)
  assert T5Config.from_dict(cfg.to_dict()) == cfg
  assert set(CONFIGS) == {"tiny", "small", "base", "large", "xl", "xxl"}
  hash(cfg)  # usable as a jit static argument


def test_logical_axes_match_params(tiny):
  cfg, params = tiny
  axes = get_logical_axes(cfg)
  assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) \
      == jax.tree.structure(params)
  flat_axes = traverse_util.flatten_dict(axes, sep="/")
  for name, arr in _flat(params).items():
    assert len(flat_axes[name]) == arr.ndim, name
  assert tuple(flat_axes["token_embedder/embedding"]) == ("vocab", "embed")
  assert tuple(flat_axes["encoder/layers_0/attention/query/kernel"]) == ("embed", "joined_kv")
  assert tuple(flat_axes["decoder/layers_1/self_attention/out/kernel"]) == ("joined_kv", "embed")
  assert tuple(flat_axes["decoder/layers_0/mlp/wo/kernel"]) == ("mlp", "embed")
  assert tuple(flat_axes["decoder/relpos_bias/rel_embedding"]) == ("heads", "relpos_buckets")
  assert tuple(flat_axes["decoder/logits_dense/kernel"]) == ("embed", "vocab")
  assert tuple(flat_axes["encoder/encoder_norm/scale"]) == ("embed",)


def test_relative_position_buckets():
  # T5's bucketing (32 buckets, max distance 128), as HF transformers computes it.
  rel = np.array([0, -1, -7, -8, -15, -16, -31, -32, -127, -128, -1000, 1, 8, 1000])
  bi = network.relative_position_bucket(rel, True, 32, 128)
  np.testing.assert_array_equal(bi, [0, 1, 7, 8, 9, 10, 11, 12, 15, 15, 15, 17, 24, 31])
  causal = network.relative_position_bucket(rel, False, 32, 128)
  np.testing.assert_array_equal(causal[:11], [0, 1, 7, 8, 15, 16, 21, 21, 31, 31, 31])
  np.testing.assert_array_equal(causal[11:], 0)


@functools.lru_cache(maxsize=None)
def _jitted(cfg, kw_items):
  kw = dict(kw_items)
  return jax.jit(lambda p, r, *a: Transformer(cfg).apply({"params": p}, *a, rngs=r, **kw))


def _apply(cfg, params, *args, rngs=None, **kw):
  """Jitted model.apply, compiled once per (config, options) and shapes."""
  kw.setdefault("enable_dropout", False)
  return _jitted(cfg, tuple(sorted(kw.items(), key=lambda i: i[0])))(params, rngs, *args)


def _xy(cfg, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.integers(2, cfg.vocab_size, (2, 8)), jnp.int32)
  y = jnp.asarray(rng.integers(2, cfg.vocab_size, (2, 5)), jnp.int32)
  return x, y


def test_forward_shapes_and_dtype(tiny):
  cfg, params = tiny
  x, y = _xy(cfg)
  logits = _apply(cfg, params, x, y, y)
  assert logits.shape == (2, 5, cfg.vocab_size) and logits.dtype == jnp.float32
  encoded = _apply(cfg, params, x, method=Transformer.encode)
  assert encoded.shape == (2, 8, cfg.d_model)
  again = _apply(cfg, params, encoded, x, y, y, method=Transformer.decode)
  np.testing.assert_allclose(again, logits, atol=1e-6)


def _packed_example(rng, vocab):
  lens = [(5, 4), (7, 3)]
  exs = [(rng.integers(2, vocab, li), rng.integers(2, vocab, lt)) for li, lt in lens]
  enc_len, dec_len = 16, 10

  def row(parts, length, shift):
    tok, seg, pos = np.zeros(length, np.int32), np.zeros(length, np.int32), np.zeros(
        length, np.int32)
    start = 0
    for s, p in enumerate(parts, 1):
      if shift:
        p = np.concatenate([[0], p[:-1]])
      tok[start:start + len(p)] = p
      seg[start:start + len(p)] = s
      pos[start:start + len(p)] = np.arange(len(p))
      start += len(p)
    return tok[None], seg[None], pos[None]

  enc = row([e[0] for e in exs], enc_len, False)
  dec_in = row([e[1] for e in exs], dec_len, True)
  dec_tgt = row([e[1] for e in exs], dec_len, False)
  return exs, enc, dec_in, dec_tgt


@pytest.mark.parametrize("use_positions", [True, False])
def test_packed_equals_unpacked(tiny, use_positions):
  cfg, params = tiny
  exs, enc, dec_in, dec_tgt = _packed_example(np.random.default_rng(1), cfg.vocab_size)
  packed = _apply(cfg, params, jnp.asarray(enc[0]), jnp.asarray(dec_in[0]),
                  jnp.asarray(dec_tgt[0]), jnp.asarray(enc[1]), jnp.asarray(dec_tgt[1]),
                  jnp.asarray(enc[2]) if use_positions else None,
                  jnp.asarray(dec_tgt[2]) if use_positions else None)
  start = 0
  for inputs, targets in exs:
    # Alone, with padding on both sides.
    x = np.zeros((1, 9), np.int32)
    x[0, :len(inputs)] = inputs
    t = np.zeros((1, 6), np.int32)
    t[0, :len(targets)] = targets
    y = np.zeros_like(t)
    y[0, 1:len(targets)] = targets[:-1]
    alone = _apply(cfg, params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(t))
    n = len(targets)
    np.testing.assert_allclose(packed[0, start:start + n], alone[0, :n], atol=2e-5)
    start += n


def test_decode_cache_matches_full_forward(tiny):
  cfg, params = tiny
  x, _ = _xy(cfg, seed=2)
  x = x.at[1, 5:].set(0)  # encoder padding
  steps = 5
  targets = np.random.default_rng(2).integers(2, cfg.vocab_size, (2, steps)).astype(np.int32)
  dec_in = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
  full = _apply(cfg, params, x, jnp.asarray(dec_in), jnp.asarray(targets))
  encoded = _apply(cfg, params, x, method=Transformer.encode)
  cache = init_cache(cfg, batch=2, max_decode_length=steps)
  model = Transformer(cfg)

  @jax.jit
  def step(cache, token):
    logits, mut = model.apply({"params": params, "cache": cache}, encoded, x,
                              token, jnp.ones_like(token), enable_dropout=False,
                              decode=True, method=Transformer.decode, mutable=["cache"])
    return logits, mut["cache"]

  for i in range(steps):
    logits, cache = step(cache, jnp.asarray(dec_in[:, i:i + 1]))
    np.testing.assert_allclose(logits[:, 0], full[:, i], atol=2e-5, err_msg=f"step {i}")
  flat = _flat(cache)
  assert int(flat["decoder/layers_0/self_attention/cache_index"]) == steps
  assert flat["decoder/layers_1/self_attention/cached_key"].shape == (
      2, steps, cfg.num_heads, cfg.head_dim)


def test_bfloat16_option(tiny):
  cfg, params = tiny
  bf = cfg.replace(dtype="bfloat16")
  x, y = _xy(cfg)
  ref = _apply(cfg, params, x, y, y)
  out = _apply(bf, params, x, y, y)
  assert out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * float(jnp.max(jnp.abs(ref)))
  model = Transformer(bf)
  encoded = jax.eval_shape(lambda p: model.apply({"params": p}, x, enable_dropout=False,
                                                 method=Transformer.encode), params)
  assert encoded.dtype == jnp.bfloat16
  # Gradients of float32 params stay float32.
  grads = jax.eval_shape(jax.grad(lambda p: model.apply(
      {"params": p}, x, y, y, enable_dropout=False).mean()), params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_dropout_and_remat(tiny):
  cfg, params = tiny
  x, y = _xy(cfg)
  # A 1+1-layer model (layers_0 of the tiny params): random-bit generation is
  # slow to compile on CPU.
  small = cfg.replace(num_encoder_layers=1, num_decoder_layers=1)
  sp = {k: {n: v for n, v in sub.items() if n != "layers_1"} for k, sub in params.items()}
  drop = small.replace(dropout_rate=0.3)
  run = lambda key: _apply(drop, sp, x, y, y, enable_dropout=True,  # noqa: E731
                           rngs={"dropout": jax.random.PRNGKey(key)})
  a, b = run(1), run(2)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3
  np.testing.assert_array_equal(run(1), a)
  # enable_dropout=False is deterministic whatever the rate (traced only).
  off = jax.eval_shape(lambda p: Transformer(drop).apply({"params": p}, x, y, y,
                                                         enable_dropout=False), sp)
  assert off.shape == a.shape
  # Remat changes neither the param tree nor the math (traced only, for speed).
  remat = cfg.replace(remat=True)
  assert jax.tree.structure(param_shapes(remat)) == jax.tree.structure(params)
  grads = jax.eval_shape(jax.grad(lambda p: Transformer(remat).apply(
      {"params": p}, x, y, y, enable_dropout=False).mean()), params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_sharded_forward_under_set_mesh():
  """Logical axis names map to a 2x2 (data, model) mesh; same logits as unsharded."""
  script = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    from flax import linen as nn
    from symbol_tuning.models.registry import get_config, get_logical_axes, param_shapes
    from symbol_tuning.models.t5.network import Transformer
    cfg = get_config("tiny", dropout_rate=0.0)
    shapes = param_shapes(cfg)  # random params without compiling the initializers
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(
        rng.standard_normal(s.shape) * (s.shape[0] ** -0.5 if len(s.shape) == 2 else 1.0),
        jnp.float32), shapes)
    rules = (("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
             ("joined_kv", "model"), ("embed", None), ("length", None), ("kv", None),
             ("relpos_buckets", None))
    x = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, (4, 12)), jnp.int32)
    y = x[:, :6]
    fwd = lambda p, x, y: Transformer(cfg).apply({"params": p}, x, y, y, enable_dropout=False)
    ref = jax.jit(fwd)(params, x, y)
    mesh = jax.make_mesh((2, 2), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    shardings = nn.logical_to_mesh_sharding(get_logical_axes(cfg), mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      sp = jax.device_put(params, shardings)
      assert sp["token_embedder"]["embedding"].sharding.spec == jax.sharding.PartitionSpec("model", None)
      out = jax.jit(fwd)(sp, x, y)
      grads = jax.jit(jax.grad(lambda p: fwd(p, x, y).mean()))(sp)
    assert np.abs(np.asarray(out) - np.asarray(ref)).max() < 1e-5
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    print("OK")
  """)
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=env, timeout=300, cwd=REPO)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
