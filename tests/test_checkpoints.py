"""Tests of checkpoint IO for every model family: HF parity (T5 and decoder-only), t5x
layout, native, conversion, errors."""
import argparse
import functools
import json
import os
import shutil

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from safetensors.numpy import save_file  # noqa: E402

import hf_reference  # noqa: E402  (runs transformers in a process without TensorFlow)
import decoder_parity  # noqa: E402  (the tiny decoder-only HF models and our logits beside them)
from symbol_tuning.checkpoints import (CheckpointError, detect_format, flatten,  # noqa: E402
                                       load_any, load_hf, load_native, load_t5x, save_hf,
                                       save_native, save_t5x)
from symbol_tuning.checkpoints import convert as convert_lib  # noqa: E402
from symbol_tuning.checkpoints.convert import convert  # noqa: E402
from symbol_tuning.checkpoints import t5x as t5x_lib  # noqa: E402
from symbol_tuning.models import registry  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402
from symbol_tuning.models.decoder.hf import config_from_hf, config_to_hf  # noqa: E402
from symbol_tuning.models.registry import param_shapes  # noqa: E402
from symbol_tuning.models.t5.config import T5Config, get_config  # noqa: E402
from symbol_tuning.models.t5.network import Transformer  # noqa: E402

# A small T5 v1.1 with distinct sizes everywhere (3 decoder layers, 4 heads of 8,
# few buckets and a short max distance so that 30-token inputs use log buckets).
HF_KW = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
             num_heads=4, relative_attention_num_buckets=8,
             relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
             dropout_rate=0.0, decoder_start_token_id=0)
CFG = T5Config(vocab_size=96, d_model=32, num_heads=4, head_dim=8, mlp_dim=48,
               num_encoder_layers=2, num_decoder_layers=3, dropout_rate=0.0,
               relative_attention_num_buckets=8, relative_attention_max_distance=20)


def _random_params(cfg, seed=0):
  rng = np.random.default_rng(seed)
  shapes = flatten(param_shapes(cfg))
  flat = {}
  for name, s in shapes.items():
    scale = 1.0 if name.endswith(("embedding", "rel_embedding")) else s.shape[0] ** -0.5
    if name.endswith("/scale"):
      flat[name] = (1.0 + 0.1 * rng.standard_normal(s.shape)).astype(np.float32)
    else:
      flat[name] = (scale * rng.standard_normal(s.shape)).astype(np.float32)
  from symbol_tuning.checkpoints import unflatten
  return unflatten(flat)


def _assert_same_params(a, b):
  fa, fb = flatten(a), flatten(b)
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def _inputs(vocab, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.ones((3, 30), np.int64)
  mask[1, 21:] = 0
  mask[2, 6:] = 0
  ids = rng.integers(2, vocab, (3, 30)) * mask
  dec = rng.integers(2, vocab, (3, 25))
  dec[:, 0] = 0  # decoder start token
  return ids, mask, dec


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda p, x, y: Transformer(cfg).apply(
      {"params": p}, x, y, jnp.ones_like(y), enable_dropout=False))


def _ours(cfg, params, ids, dec):
  return np.asarray(_forward(cfg)(params, jnp.asarray(ids, jnp.int32),
                                  jnp.asarray(dec, jnp.int32)))


def _arrays(name, ids, mask, dec):
  """Inputs of model `name` for the torch process (see hf_reference.py)."""
  return {f"{name}/input_ids": ids, f"{name}/attention_mask": mask,
          f"{name}/decoder_input_ids": dec}


# Random HF T5 models, built and run by transformers in a torch-only process (TensorFlow
# and torch's PyPI build cannot share one): name -> (seed, tied, also saved in bfloat16).
_HF_MODELS = {"untied": (0, False, False), "tied": (1, True, False), "bf16": (4, False, True)}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  """{name: (path, inputs, transformers' logits)}, with `path/../<name>_bf16` for "bf16"."""
  root = tmp_path_factory.mktemp("hf")
  arrays, specs, inputs = {}, [], {}
  for name, (seed, tied, bf16) in _HF_MODELS.items():
    inputs[name] = _inputs(HF_KW["vocab_size"], seed=seed)
    arrays.update(_arrays(name, *inputs[name]))
    specs.append(dict(name=name, path=str(root / name), config=HF_KW, tied=tied, seed=seed,
                      bfloat16_path=str(root / f"{name}_bf16") if bf16 else None))
  logits = hf_reference.run("hf_reference:t5_random", arrays, models=specs)
  return {name: (root / name, inputs[name], logits[f"{name}/logits"]) for name in _HF_MODELS}


# -----------------------------------------------------------------------------
# HuggingFace.
# -----------------------------------------------------------------------------
def test_hf_parity_untied(hf_models, tmp_path):
  path, (ids, _, dec), ref = hf_models["untied"]
  shutil.copytree(path, tmp_path / "hf")
  cfg, params = load_hf(tmp_path / "hf")
  assert cfg == CFG
  ours = _ours(cfg, params, ids, dec)
  assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()
  # A transformers-4 style config.json (tie_word_embeddings=false, no
  # scale_decoder_outputs) means the same model.
  cfg_path = tmp_path / "hf" / "config.json"
  data = json.loads(cfg_path.read_text())
  data.pop("scale_decoder_outputs", None)
  data["tie_word_embeddings"] = False
  cfg_path.write_text(json.dumps(data))
  cfg4, params4 = load_hf(tmp_path / "hf")
  assert cfg4 == cfg
  _assert_same_params(params4, params)


def test_hf_parity_tied_scaled(hf_models):
  path, (ids, _, dec), ref = hf_models["tied"]
  cfg, params = load_hf(path)
  assert cfg.logits_via_embedding
  assert "logits_dense" not in params["decoder"]
  ours = _ours(cfg, params, ids, dec)
  assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()


def test_save_hf_loads_in_transformers(tmp_path):
  arrays, specs, saved = {}, [], {}
  for seed, via_embedding in ((2, False), (3, True)):
    name = f"via_embedding_{via_embedding}"
    cfg = CFG.replace(logits_via_embedding=via_embedding)
    params = _random_params(cfg, seed=seed)
    save_hf(cfg, params, tmp_path / name)
    saved[name] = cfg, params, _inputs(cfg.vocab_size, seed=seed)
    arrays.update(_arrays(name, *saved[name][2]))
    specs.append(dict(name=name, path=str(tmp_path / name)))
  logits = hf_reference.run("hf_reference:t5_logits", arrays, models=specs)
  for name, (cfg, params, (ids, _, dec)) in saved.items():
    ours, ref = _ours(cfg, params, ids, dec), logits[f"{name}/logits"]
    assert np.abs(ours - ref).max() < 1e-4, (name, np.abs(ours - ref).max())
    cfg2, params2 = load_hf(tmp_path / name)
    assert cfg2 == cfg
    _assert_same_params(params2, params)


def test_flan_t5_config_json_maps_to_named_config():
  from symbol_tuning.models import registry
  hf = registry.get_family("t5").hf
  # google/flan-t5-small's config.json (task_specific_params left out).
  flan_small = {
      "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64,
      "d_model": 512, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
      "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
      "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
      "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
      "num_decoder_layers": 8, "num_heads": 6, "num_layers": 8, "output_past": True,
      "pad_token_id": 0, "relative_attention_max_distance": 128,
      "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
      "torch_dtype": "float32", "transformers_version": "4.23.1", "use_cache": True,
      "vocab_size": 32128}
  assert hf.config_from_hf(flan_small, "config.json") == get_config("small")
  assert hf.config_from_hf(hf.config_to_hf(get_config("xl")), "config.json") == get_config("xl")


def test_save_hf_sharded_round_trip(tmp_path):
  params = _random_params(CFG, seed=3)
  save_hf(CFG, params, tmp_path / "out", max_shard_bytes=20_000)
  index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  assert not (tmp_path / "out" / "model.safetensors").exists()
  cfg, loaded = load_hf(tmp_path / "out")
  assert cfg == CFG
  _assert_same_params(loaded, params)


def test_hf_reads_bfloat16_safetensors(hf_models):
  path = hf_models["bf16"][0]
  _, p32 = load_hf(path)
  _, p16 = load_hf(path.parent / "bf16_bf16")
  for k, v in flatten(p16).items():
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, flatten(p32)[k], rtol=1e-2, atol=1e-6, err_msg=k)


# -----------------------------------------------------------------------------
# t5x.
# -----------------------------------------------------------------------------
def test_t5x_round_trip_and_layout(tmp_path):
  from flax import serialization
  params = _random_params(CFG, seed=5)
  ckpt_dir = save_t5x(params, tmp_path / "model", step=10)
  assert ckpt_dir == str(tmp_path / "model" / "checkpoint_10")
  name = "target.encoder.layers_0.attention.query.kernel"
  assert (tmp_path / "model" / "checkpoint_10" / name / ".zarray").is_file()
  with open(os.path.join(ckpt_dir, "checkpoint"), "rb") as f:
    contents = serialization.msgpack_restore(f.read())
  assert contents["version"] == 3
  assert int(contents["optimizer"]["state"]["step"]) == 10
  spec = contents["optimizer"]["target"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert spec["driver"] == "zarr" and spec["kvstore"] == {"driver": "file", "path": name}
  assert list(spec["metadata"]["shape"]) == [32, 32]
  # Loaded from the model dir, the step dir, or the msgpack file; config inferred
  # (num_heads from the relpos table, so head_dim 8 rather than a default 64).
  for path in (tmp_path / "model", ckpt_dir, os.path.join(ckpt_dir, "checkpoint")):
    cfg, loaded = load_t5x(path)
    assert cfg == CFG.replace(dropout_rate=T5Config().dropout_rate,
                              relative_attention_max_distance=128)
    _assert_same_params(loaded, params)
  assert detect_format(tmp_path / "model") == "t5x"
  assert detect_format(ckpt_dir) == "t5x"


def test_t5x_picks_latest_or_given_step(tmp_path):
  p10, p20 = _random_params(CFG, seed=6), _random_params(CFG, seed=7)
  save_t5x(p10, tmp_path, step=10)
  save_t5x(p20, tmp_path, step=20)
  assert t5x_lib.all_steps(str(tmp_path)) == [10, 20]
  _assert_same_params(load_t5x(tmp_path, CFG)[1], p20)
  _assert_same_params(load_t5x(tmp_path, CFG, step=10)[1], p10)
  with pytest.raises(CheckpointError, match="checkpoint_30"):
    load_t5x(tmp_path, CFG, step=30)
  with pytest.raises(CheckpointError, match="already exists"):
    save_t5x(p10, tmp_path, step=10)


def test_t5x_reads_gcs_specs_inline_arrays_and_bfloat16(tmp_path):
  """What public Flan-T5 checkpoints look like: gcs kvstores, bfloat16 arrays."""
  import tensorstore as ts
  from flax import serialization
  params = _random_params(CFG, seed=8)
  ckpt_dir = save_t5x(params, tmp_path, step=1)
  msgpack_path = os.path.join(ckpt_dir, "checkpoint")
  with open(msgpack_path, "rb") as f:
    contents = serialization.msgpack_restore(f.read())
  target = contents["optimizer"]["target"]

  def to_gcs(node):
    for key, value in node.items():
      if isinstance(value, dict) and "driver" in value:
        value["kvstore"] = {"bucket": "t5x-dummy-bucket", "driver": "gcs",
                            "path": value["kvstore"]["path"]}
      elif isinstance(value, dict):
        to_gcs(value)
  to_gcs(target)
  # A small unpartitioned array stored inline in the msgpack.
  target["encoder"]["encoder_norm"]["scale"] = params["encoder"]["encoder_norm"]["scale"]
  # A bfloat16 zarr array.
  name = "target.decoder.layers_1.mlp.wo.kernel"
  shutil.rmtree(os.path.join(ckpt_dir, name))
  wo = params["decoder"]["layers_1"]["mlp"]["wo"]["kernel"]
  store = ts.open({"driver": "zarr", "kvstore": {"driver": "file",
                                                 "path": os.path.join(ckpt_dir, name)},
                   "metadata": {"shape": list(wo.shape), "chunks": list(wo.shape),
                                "dtype": "bfloat16", "compressor": {"id": "gzip"}}},
                  create=True).result()
  store.write(wo.astype(jnp.bfloat16)).result()
  target["decoder"]["layers_1"]["mlp"]["wo"]["kernel"]["dtype"] = "bfloat16"
  with open(msgpack_path, "wb") as f:
    f.write(serialization.msgpack_serialize(contents))

  _, loaded = load_t5x(tmp_path, CFG)
  flat, ref = flatten(loaded), flatten(params)
  np.testing.assert_allclose(flat["decoder/layers_1/mlp/wo/kernel"],
                             ref["decoder/layers_1/mlp/wo/kernel"], rtol=1e-2)
  del flat["decoder/layers_1/mlp/wo/kernel"], ref["decoder/layers_1/mlp/wo/kernel"]
  for k in ref:
    np.testing.assert_array_equal(flat[k], ref[k], err_msg=k)


def test_t5x_errors(tmp_path):
  params = _random_params(CFG, seed=9)
  ckpt_dir = save_t5x(params, tmp_path, step=3)
  with pytest.raises(CheckpointError, match=r"checkpoint_3: parameter '[\w/]+' has shape "
                     r"\(\d+(, \d+)?,?\), expected \(\d+(, \d+)?,?\) for this config"):
    load_t5x(tmp_path, get_config("tiny"))
  shutil.rmtree(os.path.join(ckpt_dir, "target.decoder.decoder_norm.scale"))
  with pytest.raises(CheckpointError, match="decoder/decoder_norm/scale"):
    load_t5x(tmp_path)
  with pytest.raises(CheckpointError, match="not a t5x checkpoint"):
    load_t5x(tmp_path / "checkpoint_3" / "target.encoder.encoder_norm.scale")


# -----------------------------------------------------------------------------
# Native and conversion.
# -----------------------------------------------------------------------------
def test_native_round_trip(tmp_path):
  cfg = CFG.replace(dropout_rate=0.05, dtype="bfloat16")
  params = _random_params(cfg, seed=10)
  save_native(cfg, jax.tree.map(jnp.asarray, params), tmp_path / "n")
  assert detect_format(tmp_path / "n") == "native"
  cfg2, loaded = load_native(tmp_path / "n")
  assert cfg2 == cfg
  assert isinstance(flatten(loaded)["token_embedder/embedding"], np.ndarray)
  _assert_same_params(loaded, params)
  save_native(cfg, _random_params(cfg, seed=11), tmp_path / "n")  # overwrite
  _assert_same_params(load_native(tmp_path / "n")[1], _random_params(cfg, seed=11))


def test_convert_across_formats(tmp_path):
  params = _random_params(CFG, seed=12)
  save_hf(CFG, params, tmp_path / "hf")
  assert detect_format(tmp_path / "hf") == "hf"
  convert(tmp_path / "hf", tmp_path / "t5x", "t5x", step=7)
  assert t5x_lib.all_steps(str(tmp_path / "t5x")) == [7]
  convert(tmp_path / "t5x", tmp_path / "native", "native", config=CFG)
  convert(tmp_path / "native", tmp_path / "hf2", "hf")
  convert(tmp_path / "hf2", tmp_path / "t5x2", "t5x")
  for path in ("t5x", "native", "hf2", "t5x2"):
    cfg, loaded = load_any(tmp_path / path, CFG)
    _assert_same_params(loaded, params)
  assert load_any(tmp_path / "native")[0] == CFG
  assert t5x_lib.all_steps(str(tmp_path / "t5x2")) == [0]


def test_convert_cli(tmp_path, capsys):
  params = _random_params(CFG, seed=13)
  save_hf(CFG, params, tmp_path / "hf")
  parser = argparse.ArgumentParser(prog="symbol-tuning")
  convert_lib.register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["convert", str(tmp_path / "hf"), str(tmp_path / "t5x"),
                            "--to", "t5x", "--step", "5"])
  assert args.func(args) == 0
  _assert_same_params(load_t5x(tmp_path / "t5x")[1], params)
  assert convert_lib.main([str(tmp_path / "t5x"), str(tmp_path / "n")]) == 0
  assert detect_format(tmp_path / "n") == "native"
  # Errors are one line on stderr, exit code 2.
  os.makedirs(tmp_path / "empty")
  assert convert_lib.main([str(tmp_path / "empty"), str(tmp_path / "x")]) == 2
  assert convert_lib.main([str(tmp_path / "hf"), str(tmp_path / "y"), "--config", "tiny"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and "no model checkpoint found" in err[0]
  assert "tensor 'shared.weight' has shape (96, 32), expected (512, 64)" in err[1]


# -----------------------------------------------------------------------------
# Clear errors.
# -----------------------------------------------------------------------------
def _hf_dir(tmp_path, seed=14):
  save_hf(CFG, _random_params(CFG, seed=seed), tmp_path / "hf")
  return tmp_path / "hf"


def _edit_config(path, **changes):
  data = json.loads((path / "config.json").read_text())
  data.update(changes)
  (path / "config.json").write_text(json.dumps(data))


def _edit_tensors(path, fn):
  from safetensors.numpy import load_file, save_file
  tensors = load_file(str(path / "model.safetensors"))
  fn(tensors)
  save_file(tensors, str(path / "model.safetensors"))


def test_error_non_t5_config(tmp_path):
  path = _hf_dir(tmp_path)
  _edit_config(path, model_type="bert")
  with pytest.raises(CheckpointError, match=r"config\.json: model_type 'bert' is not supported"):
    load_hf(path)


def test_error_t5_v1_0_relu(tmp_path):
  path = _hf_dir(tmp_path)
  _edit_config(path, feed_forward_proj="relu")
  with pytest.raises(CheckpointError,
                     match=r"config\.json: feed_forward_proj is 'relu' \(T5 v1\.0\)"):
    load_hf(path)


def test_error_missing_tensor(tmp_path):
  path = _hf_dir(tmp_path)
  name = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
  _edit_tensors(path, lambda t: t.pop(name))
  with pytest.raises(CheckpointError, match=rf"tensor '{name}' is missing \(expected shape "
                     r"\(32, 48\)\)"):
    load_hf(path)


def test_error_wrong_shape(tmp_path):
  path = _hf_dir(tmp_path)
  name = "decoder.block.2.layer.1.EncDecAttention.q.weight"

  def shrink(t):
    t[name] = np.zeros((16, 32), np.float32)
  _edit_tensors(path, shrink)
  with pytest.raises(CheckpointError, match=rf"tensor '{name}' has shape \(16, 32\), "
                     r"expected \(32, 32\)"):
    load_hf(path)


def test_error_unexpected_tensor(tmp_path):
  path = _hf_dir(tmp_path)
  _edit_config(path, num_decoder_layers=2)
  with pytest.raises(CheckpointError, match="unexpected tensor 'decoder.block.2"):
    load_hf(path)


def test_error_pytorch_bin_only(tmp_path):
  path = _hf_dir(tmp_path)
  os.remove(path / "model.safetensors")
  # Not a valid pickle either: the loader must not try to unpickle it.
  (path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
  with pytest.raises(CheckpointError, match="pytorch_model.bin.*convert the model to "
                     "safetensors"):
    load_hf(path)


def test_error_detect_format(tmp_path):
  os.makedirs(tmp_path / "empty")
  with pytest.raises(CheckpointError, match="no model checkpoint found"):
    detect_format(tmp_path / "empty")
  with pytest.raises(CheckpointError, match="no such file"):
    detect_format(tmp_path / "nope")
  with pytest.raises(CheckpointError, match="no model checkpoint found"):
    load_any(tmp_path / "empty")


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_t5x_optimizer_state_is_what_t5xs_adafactor_starts_with(size):
  """save_t5x writes, per parameter, exactly the state t5x's own Adafactor (as t5_1_1's gin
  files configure it: logical factor rules) initializes, so t5x.train restores it like a
  public Flan-T5 checkpoint (tests/test_t5x_binaries.py runs that)."""
  import t5x_support  # pylint: disable=import-outside-toplevel

  t5x_support.require_t5x()
  from t5x import adafactor  # pylint: disable=import-outside-toplevel

  from symbol_tuning.models.registry import get_logical_axes  # pylint: disable=import-outside-toplevel

  config = get_config(size)
  shapes = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), param_shapes(config))
  optimizer = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                                  logical_factor_rules=adafactor.standard_logical_factor_rules())
  optimizer.set_param_axes(get_logical_axes(config))
  from flax import serialization  # pylint: disable=import-outside-toplevel

  theirs = flatten(serialization.to_state_dict(optimizer.init_state(shapes).param_states))
  ours = {f"{name}/{key}": value for name, leaf in flatten(shapes).items()
          for key, value in t5x_lib.adafactor_initial_state(leaf.shape).items()}
  assert set(ours) == set(theirs)
  for name, value in theirs.items():
    assert ours[name].shape == tuple(value.shape), name
    assert not np.any(ours[name])


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_hf_and_native_round_trip_every_family(tmp_path, name):
  """save_hf / load_hf and save_native / load_native give back the config and params of
  every family; a checkpoint of another family than the given config is refused."""
  family = registry.get_family(name)
  config = family.get_config(next(iter(family.configs)), vocab_size=128)
  params = jax.tree.map(np.asarray, family.init_params(config, 0))
  save_hf(config, params, str(tmp_path / "hf"))
  save_native(config, params, str(tmp_path / "native"))
  for loaded_config, loaded in (load_hf(str(tmp_path / "hf")),
                                load_native(str(tmp_path / "native"))):
    assert registry.family_of(loaded_config) is family
    _assert_same_params(loaded, params)
  other = next(f for f in registry.FAMILIES.values() if f is not family)
  with pytest.raises(CheckpointError, match=f"a {name} model .* the config is a {other.name}"):
    load_any(str(tmp_path / "hf"), other.get_config(next(iter(other.configs))))


# -----------------------------------------------------------------------------
# Decoder-only HF checkpoints (Llama, Mistral, Qwen2, Qwen3, Gemma): import parity with transformers,
# export round trip, errors. transformers/torch run only in a separate process
# (tests/hf_reference.py): torch segfaults when imported where TensorFlow already is.
# -----------------------------------------------------------------------------
DECODER_HF, SHARDED = decoder_parity.DECODER_HF, decoder_parity.SHARDED

def _run_torch(jobs, tokens):
  """{name: logits} of hf_reference.decoder_logits, run in a torch-only process."""
  return hf_reference.run("hf_reference:decoder_logits", {"tokens": tokens.astype(np.int32)},
                          jobs=jobs)


def _decoder_logits(config, params, tokens):
  model = decoder_network.DecoderOnlyTransformer(config)
  return np.asarray(model.apply({"params": params}, tokens, enable_dropout=False))


@pytest.fixture(scope="module")
def decoder_hf_models(tmp_path_factory):
  """{family: (dir, {"short", "long": reference logits})} of tiny random transformers
  models (tests/decoder_parity.py), and the tokens."""
  return decoder_parity.make_models(tmp_path_factory.mktemp("hf_decoder"))


@pytest.mark.parametrize("family", sorted(DECODER_HF))
def test_decoder_import_gives_transformers_logits(decoder_hf_models, family):
  """Positions 0..23 and 20,000..20,023, past every window."""
  models, tokens = decoder_hf_models
  path, reference = models[family]
  if family in SHARDED:
    assert (path / "model.safetensors.index.json").is_file()
  config, params = load_hf(str(path))
  assert config.family == family
  assert _decoder_logits(config, params, tokens).shape == reference["short"].shape
  differences = decoder_parity.max_differences(models[family], tokens)
  assert max(differences.values()) < 1e-4, differences
  # load_any (the CLI's path) finds the same model from the directory alone.
  config_any, params_any = load_any(str(path))
  assert config_any == config
  assert all(np.array_equal(a, flatten(params_any)[k]) for k, a in flatten(params).items())


def test_decoder_export_round_trip_loads_in_transformers(decoder_hf_models, tmp_path):
  """save_hf -> transformers from_pretrained gives the original logits; our
  own re-import returns the exact params and config."""
  models, tokens = decoder_hf_models
  jobs = []
  for family, (path, _) in models.items():
    config, params = load_hf(str(path))
    out = tmp_path / family
    save_hf(config, params, str(out), max_shard_bytes=60_000 if family == "llama"
                    else 5 * 1024 ** 3)
    again_config, again = load_hf(str(out))
    assert again_config == config
    assert all(np.array_equal(a, flatten(again)[k]) for k, a in flatten(params).items())
    jobs.append({"name": family, "dir": str(out)})
  assert (tmp_path / "llama" / "model.safetensors.index.json").is_file()
  reloaded = _run_torch(jobs, tokens)
  for family, (_, reference) in models.items():
    assert np.abs(reloaded[family] - reference["short"]).max() < 1e-5, family


def test_native_round_trip_keeps_the_decoder_config(decoder_hf_models, tmp_path):
  models, tokens = decoder_hf_models
  config, params = load_hf(str(models["gemma"][0]))
  save_native(config, params, str(tmp_path / "native"))
  again_config, again = load_native(str(tmp_path / "native"))
  assert again_config == config
  np.testing.assert_array_equal(_decoder_logits(again_config, again, tokens),
                                _decoder_logits(config, params, tokens))


# -----------------------------------------------------------------------------
# Config reading and errors (hand-written config.json files, no torch).
# -----------------------------------------------------------------------------
def test_decoder_legacy_rope_fields_and_gemma_gelu_are_read():
  config = config_from_hf({
      "model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
      "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 500000.0,
      "rope_scaling": {"type": "linear", "factor": 4.0}, "eos_token_id": [1, 2]})
  assert config.rope_theta == 500000.0
  assert dict(config.rope_scaling) == {"factor": 4.0, "rope_type": "linear"}
  assert (config.num_kv_heads, config.head_dim, config.eos_token_id) == (2, 4, (1, 2))
  gemma = config_from_hf({"model_type": "gemma", "vocab_size": 10, "hidden_size": 8,
                          "intermediate_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "hidden_act": "gelu"})
  assert (gemma.activation, gemma.tie_embeddings, gemma.norm_scale_offset) == (
      "gelu_tanh", True, 1.0)


def test_decoder_sliding_windows_are_read_as_transformers_reads_them():
  """Mistral windows every layer (a null window: none); Qwen2 only with use_sliding_window,
  from max_window_layers on; Llama never; export writes back what was read."""
  base = {"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 3, "num_attention_heads": 2}
  mistral = config_from_hf({**base, "model_type": "mistral", "sliding_window": 7})
  assert (mistral.sliding_window, [mistral.layer_window(i) for i in range(3)]) == (7, [7] * 3)
  assert config_from_hf({**base, "model_type": "mistral", "sliding_window": None}
                        ).layer_window(0) is None
  qwen = {**base, "model_type": "qwen2", "sliding_window": 4, "max_window_layers": 1}
  assert config_from_hf(qwen).sliding_window is None  # use_sliding_window defaults to false
  windowed = config_from_hf({**qwen, "use_sliding_window": True})
  assert [windowed.layer_window(i) for i in range(3)] == [None, 4, 4]
  exported = config_to_hf(windowed)
  assert (exported["use_sliding_window"], exported["max_window_layers"],
          exported["layer_types"]) == (True, 1, ["full_attention"] + ["sliding_attention"] * 2)
  assert config_from_hf(exported) == windowed
  assert config_to_hf(mistral)["sliding_window"] == 7
  assert config_from_hf({**base, "model_type": "llama", "sliding_window": 4}).sliding_window \
      is None
  with pytest.raises(CheckpointError, match="llama export: .* no sliding window"):
    config_to_hf(mistral.replace(family="llama"))
  # Gemma 3's older fields: one pattern, a local RoPE base beside rope_theta and its scaling.
  gemma3 = config_from_hf({**base, "model_type": "gemma3_text", "num_hidden_layers": 4,
                           "sliding_window": 3, "sliding_window_pattern": 2,
                           "rope_theta": 5e5, "rope_local_base_freq": 1e4,
                           "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
  assert [gemma3.layer_window(i) for i in range(4)] == [3, None, 3, None]
  assert (gemma3.rope_theta, dict(gemma3.rope_scaling), gemma3.local_rope_theta) == (
      5e5, {"rope_type": "linear", "factor": 8.0}, 1e4)
  assert (gemma3.qk_norm, gemma3.post_norms, gemma3.query_pre_attn_scalar) == (True, True, 256)
  assert config_from_hf(config_to_hf(gemma3)) == gemma3
  with pytest.raises(CheckpointError, match="use_bidirectional_attention=true is not"):
    config_from_hf({**base, "model_type": "gemma3_text", "use_bidirectional_attention": True})
  # model_config.json (native and t5x checkpoints) keeps the per-layer fields.
  assert type(gemma3).from_dict(json.loads(json.dumps(gemma3.to_dict()))) == gemma3


def _write_decoder_config(path, **overrides):
  path.mkdir(parents=True, exist_ok=True)
  data = {"model_type": "qwen2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
          **overrides}
  (path / "config.json").write_text(json.dumps(data))
  return data


def test_decoder_errors_name_the_file_and_tensor(tmp_path):
  _write_decoder_config(tmp_path / "m", model_type="falcon")
  # A decoder-only model_type no family reads: one line naming it and the supported ones.
  with pytest.raises(CheckpointError, match=r"config\.json: model_type 'falcon' is not "
                     r"supported; supported: t5, mt5, llama, mistral, qwen2, qwen3, gemma, gemma2, "
                     r"gemma3_text$"):
    load_hf(str(tmp_path / "m"))
  _write_decoder_config(tmp_path / "pickle")
  (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"\x80")
  with pytest.raises(CheckpointError, match="pickled"):
    load_hf(str(tmp_path / "pickle"))
  _write_decoder_config(tmp_path / "missing")
  save_file({"model.embed_tokens.weight": np.zeros((16, 8), np.float32)},
            str(tmp_path / "missing" / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"model.safetensors: tensor "
                     r"'model.layers.0.input_layernorm.weight' is missing"):
    load_hf(str(tmp_path / "missing"))
  save_file({"model.embed_tokens.weight": np.zeros((17, 8), np.float32)},
            str(tmp_path / "missing" / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"'model.embed_tokens.weight' has shape \(17, 8\), "
                     r"expected \(16, 8\)"):
    load_hf(str(tmp_path / "missing"))
