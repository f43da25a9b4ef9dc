"""The model families: the interface over every family (config tags, registry, shapes and
logical axes), then each network: T5 v1.1 (t5x layout, packing, decode cache, dtypes) and
decoder-only (KV cache, packing, prefix attention, sharding)."""
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

from symbol_tuning.training import partitioning  # noqa: E402

from symbol_tuning.models import registry  # noqa: E402
from symbol_tuning.models.decoder import inference as decoder_inference  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402
from symbol_tuning.models.decoder.config import DecoderConfig  # noqa: E402
from symbol_tuning.models.registry import (get_logical_axes, init_params,  # noqa: E402
                                           param_shapes)
from symbol_tuning.models.t5 import network  # noqa: E402
from symbol_tuning.models.t5.config import CONFIGS, T5Config, get_config  # noqa: E402
from symbol_tuning.models.t5.inference import init_cache  # noqa: E402
from symbol_tuning.models.t5.network import Transformer  # noqa: E402
from xla_flags import xla_flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------
# The family interface, for every registered family.
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_family_interface(name):
  """Configs carry their tag and round-trip through the registry; every parameter has one
  logical axis name per dimension; shapes are traced without computing."""
  family = registry.get_family(name)
  config = family.get_config(next(iter(family.configs)))
  assert registry.family_of(config) is family and config.to_dict()["architecture"] == \
      family.architecture
  assert registry.config_from_dict(config.to_dict()) == config
  assert registry.get_config(next(iter(family.configs))) == config
  axes, shapes = family.get_logical_axes(config), family.param_shapes(config)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  assert jax.tree.structure(axes, is_leaf=is_spec) == jax.tree.structure(shapes)
  for spec, shape in zip(jax.tree.leaves(axes, is_leaf=is_spec), jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape) and all(n is not None for n in spec), spec
  hash(config)  # usable as a jit static argument


def test_registry_dispatch_and_errors():
  t5, decoder = registry.get_config("tiny"), registry.get_config("llama-tiny")
  assert "encoder" in param_shapes(t5) and "encoder" not in param_shapes(decoder)
  assert "decoder" in param_shapes(decoder)
  # model_config.json written before configs carried their tag: T5.
  untagged = {k: v for k, v in t5.to_dict().items() if k != "architecture"}
  assert registry.config_from_dict(untagged) == t5
  with pytest.raises(ValueError, match="architecture 'mamba' is not supported"):
    registry.config_from_dict({"architecture": "mamba"})
  with pytest.raises(ValueError, match="t5: tiny, small.*decoder: llama-tiny"):
    registry.get_config("no-such-model")
  assert registry.for_hf_model_type("gemma2") is registry.get_family("decoder")
  with pytest.raises(ValueError, match="^model_type 'falcon' is not supported; supported: t5, "
                     "mt5, llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text$"):
    registry.for_hf_model_type("falcon")
  with pytest.raises(ValueError, match="unknown DecoderConfig field"):
    registry.get_config("llama-tiny", no_such_field=1)


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
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
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
  env["XLA_FLAGS"] = xla_flags()  # the script asks for its 4 devices itself
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=env, timeout=300, cwd=REPO)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------
# The decoder-only network.
# ------------------------------------------------------------------------------------------
# GQA (4 query heads on 2 kv heads), biases, QK-norm and soft-capping all on.
CFG = registry.get_config("llama-tiny", qkv_bias=True, out_bias=True, qk_norm=True,
                          attn_logit_softcap=30.0, final_logit_softcap=20.0)


@pytest.fixture(scope="module")
def decoder_params():
  return init_params(CFG, 0)


def _decoder_apply(params, tokens, **kwargs):
  model = decoder_network.DecoderOnlyTransformer(CFG)
  return model.apply({"params": params}, jnp.asarray(tokens), enable_dropout=False, **kwargs)


def test_decoder_cached_prefill_then_steps_equals_full_forward(decoder_params):
  tokens = np.random.default_rng(0).integers(1, CFG.vocab_size, size=(2, 12))
  full = _decoder_apply(decoder_params, tokens)
  model = decoder_network.DecoderOnlyTransformer(CFG)
  cache = decoder_inference.init_cache(CFG, batch=2, max_decode_length=12)
  pieces = []
  for start, stop in ((0, 7), (7, 8), (8, 9), (9, 12)):  # a prompt, two steps, a chunk
    out, mutated = model.apply({"params": decoder_params, "cache": cache},
                               jnp.asarray(tokens[:, start:stop]), enable_dropout=False,
                               decode=True, mutable=["cache"])
    cache = mutated["cache"]
    pieces.append(out)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


# Mistral's layout: every layer sees the last 4 positions; Qwen2's use_sliding_window
# form and Gemma 2/3 window only the layers layer_types marks.
WINDOWED = {"mistral": registry.get_config("mistral-tiny", qkv_bias=True),
            "per-layer": registry.get_config("mistral-tiny", sliding_window=3, layer_types=(
                "full_attention", "sliding_attention")),
            # Gemma 2: local then global layer, caps that bind, sandwich norms.
            "gemma2": registry.get_config("gemma2-tiny", attn_logit_softcap=2.0,
                                          final_logit_softcap=3.0),
            "gemma2-global-first": registry.get_config("gemma2-tiny", layer_types=(
                "full_attention", "sliding_attention")),
            # Gemma 3: QK-norm, two local layers (their own RoPE base) and a global one.
            "gemma3": registry.get_config("gemma3-tiny")}


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_sliding_window_cache_equals_full_forward_beyond_the_window(name):
  """A 14-token row (3.5 windows) scored through the cache in a prompt chunk longer than
  the window, single steps and a chunk equals the full pass; the window is real: token 0
  reaches window - 1 positions further per windowed layer (all of them past a full layer)
  and changes no logit beyond."""
  cfg = WINDOWED[name]
  params = init_params(cfg, 0)
  model = decoder_network.DecoderOnlyTransformer(cfg)
  tokens = np.random.default_rng(4).integers(1, cfg.vocab_size, size=(2, 14))
  full = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), enable_dropout=False))
  cache = decoder_inference.init_cache(cfg, batch=2, max_decode_length=14)
  pieces = []
  for start, stop in ((0, 9), (9, 10), (10, 11), (11, 14)):
    out, mutated = model.apply({"params": params, "cache": cache},
                               jnp.asarray(tokens[:, start:stop]), enable_dropout=False,
                               decode=True, mutable=["cache"])
    cache = mutated["cache"]
    pieces.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)
  changed = tokens.copy()
  changed[:, 0] = changed[:, 0] % (cfg.vocab_size - 1) + 1
  other = np.asarray(model.apply({"params": params}, jnp.asarray(changed), enable_dropout=False))
  moved = np.abs(other - full).max(axis=(0, 2)) > 0
  reach = sum(cfg.layer_window(i) or tokens.shape[1] for i in range(cfg.num_layers))
  reach -= cfg.num_layers - 1  # the last position token 0 reaches
  assert moved.tolist() == [i < min(reach, 14) for i in range(14)], moved



@pytest.mark.parametrize("name", ["gemma3", "per-layer"])
def test_local_layers_cache_holds_at_most_the_window(name):
  """The real cache after init and after prefilling a prompt 4x the window: local layers'
  keys, values and valid flags have the window as their length axis, global layers the
  whole decode length; a decode length under the window bounds a local layer's too."""
  cfg = WINDOWED[name]
  window, prompt = cfg.sliding_window, 4 * cfg.sliding_window
  ops = decoder_inference.DecoderInference(cfg, init_params(cfg, 0))
  _, cache, _ = ops.start([list(range(1, prompt + 1)), [5, 6]], 2, prompt, 4)
  for state in (decoder_inference.init_cache(cfg, 2, prompt + 4), cache):
    for i in range(cfg.num_layers):
      layer = state["decoder"][f"layers_{i}"]["self_attention"]
      length = window if cfg.layer_window(i) else prompt + 4
      assert layer["cached_key"].shape == layer["cached_value"].shape == (
          2, length, cfg.num_kv_heads, cfg.head_dim), (i, layer["cached_key"].shape)
      assert layer["cached_valid"].shape == (2, length)
  local = [i for i in range(cfg.num_layers) if cfg.layer_window(i)][0]
  after = cache["decoder"][f"layers_{local}"]["self_attention"]
  assert int(after["cache_index"]) == prompt
  # Row 0's last `window` prompt positions fill the ring; row 1 (2 tokens) left-padded.
  assert np.asarray(after["cached_valid"]).sum(axis=1).tolist() == [window, 2]
  short = decoder_inference.init_cache(cfg, 1, window - 1)["decoder"][f"layers_{local}"]
  assert short["self_attention"]["cached_key"].shape[1] == window - 1


def test_decoder_packed_segments_equal_separate_examples(decoder_params):
  """Two examples packed in one row (segment ids, positions restarting) give each
  example's own logits; the trailing padding (segment 0) changes nothing."""
  rng = np.random.default_rng(1)
  a, b = rng.integers(1, CFG.vocab_size, size=5), rng.integers(1, CFG.vocab_size, size=4)
  row = np.concatenate([a, b, [0, 0]])[None]
  segments = np.array([[1] * 5 + [2] * 4 + [0, 0]])
  positions = np.array([list(range(5)) + list(range(4)) + [0, 0]])
  packed = _decoder_apply(decoder_params, row, decoder_segment_ids=jnp.asarray(segments),
                          decoder_positions=jnp.asarray(positions))
  for part, example in ((slice(0, 5), a), (slice(5, 9), b)):
    np.testing.assert_allclose(packed[0, part], _decoder_apply(decoder_params, example[None])[0],
                               atol=1e-5)


def test_decoder_prefix_attention_is_bidirectional_over_the_prefix_only(decoder_params):
  tokens = np.random.default_rng(2).integers(1, CFG.vocab_size, size=(1, 8))
  changed = tokens.copy()
  changed[0, 3] = (changed[0, 3] % (CFG.vocab_size - 1)) + 1  # a later prefix token
  prefix = jnp.asarray([[1, 1, 1, 1, 0, 0, 0, 0]])
  causal = [np.asarray(_decoder_apply(decoder_params, t)) for t in (tokens, changed)]
  prefix_lm = [np.asarray(_decoder_apply(decoder_params, t, decoder_causal_attention=prefix))
               for t in (tokens, changed)]
  np.testing.assert_array_equal(causal[0][0, :3], causal[1][0, :3])  # causal: no look-ahead
  assert np.abs(prefix_lm[0][0, :3] - prefix_lm[1][0, :3]).max() > 1e-3  # prefix sees ahead


def test_decoder_every_parameter_has_logical_axes_and_shards_like_t5(decoder_params):
  """Every dimension carries a logical name; on a (data 2, model 4) mesh with the
  T5 path's rules the sharded forward pass equals the single-device one."""
  axes = get_logical_axes(CFG)
  shapes = param_shapes(CFG)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  for spec, shape in zip(jax.tree.leaves(axes, is_leaf=is_spec), jax.tree.leaves(shapes)):
    assert len(spec) == len(shape.shape) and all(name is not None for name in spec), spec
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (fake) devices")
  mesh = partitioning.make_mesh(data=2, model=4)
  rules, _ = partitioning.fit_rules(mesh, axes, shapes)
  shardings = partitioning.logical_to_shardings(mesh, axes, rules)
  sharded_params = jax.device_put(decoder_params, shardings)
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
  np.testing.assert_allclose(np.asarray(sharded),
                             np.asarray(_decoder_apply(decoder_params, tokens)), atol=1e-5)


def test_decoder_config_rejects_impossible_shapes():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    DecoderConfig(num_heads=6, num_kv_heads=4)
  with pytest.raises(ValueError, match="rope_type 'dynamic' is not supported"):
    DecoderConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
