"""HF decoder-only checkpoints: import parity with transformers, export round trip, errors.

transformers/torch run only in a separate process (tests/hf_reference.py): torch segfaults
when imported where TensorFlow already is (pytest collection imports TF). The child writes
tiny random models with `save_pretrained` and returns their logits; nothing is pickled.
"""
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import hf_reference  # noqa: E402
from symbol_tuning.checkpoints import (CheckpointError, flatten, load_any,  # noqa: E402
                                       load_native, save_native)
from symbol_tuning.checkpoints.hf import load_hf as load_hf_decoder  # noqa: E402
from symbol_tuning.checkpoints.hf import save_hf as save_hf_decoder  # noqa: E402
from symbol_tuning.models.decoder import network as decoder_network  # noqa: E402
from symbol_tuning.models.decoder.hf import config_from_hf  # noqa: E402

_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2)
# One tiny model per family, each exercising that family's options.
FAMILIES = {
    "llama": dict(_COMMON, head_dim=16, attention_bias=True, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 16}),
    "qwen2": dict(_COMMON, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0,
                  rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                "original_max_position_embeddings": 8}),
    "qwen3": dict(_COMMON, head_dim=16, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "gemma": dict(_COMMON, head_dim=32, hidden_act="gelu_pytorch_tanh"),  # heads*head_dim != hidden
}
SHARDED = {"qwen2"}  # saved with a small max_shard_size: exercises the index file

def _run_torch(jobs, tokens):
  """{name: logits} of hf_reference.decoder_logits, run in a torch-only process."""
  return hf_reference.run("hf_reference:decoder_logits", {"tokens": tokens.astype(np.int32)},
                          jobs=jobs)


def _logits(config, params, tokens):
  model = decoder_network.DecoderOnlyTransformer(config)
  return np.asarray(model.apply({"params": params}, tokens, enable_dropout=False))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  """{family: (dir, reference logits)} of tiny random transformers models, and the tokens."""
  tmp = tmp_path_factory.mktemp("hf_decoder")
  tokens = np.random.default_rng(0).integers(0, 128, size=(2, 24))
  jobs = [{"name": fam, "dir": str(tmp / fam), "model_type": fam, "config": cfg,
           "shard": fam in SHARDED} for fam, cfg in FAMILIES.items()]
  logits = _run_torch(jobs, tokens)
  return {fam: (tmp / fam, logits[fam]) for fam in FAMILIES}, tokens


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_gives_transformers_logits(hf_models, family):
  models, tokens = hf_models
  path, reference = models[family]
  if family in SHARDED:
    assert (path / "model.safetensors.index.json").is_file()
  config, params = load_hf_decoder(str(path))
  assert config.family == family
  ours = _logits(config, params, tokens)
  assert ours.shape == reference.shape
  assert np.abs(ours - reference).max() < 1e-4, np.abs(ours - reference).max()
  # load_any (the CLI's path) finds the same model from the directory alone.
  config_any, params_any = load_any(str(path))
  assert config_any == config
  assert all(np.array_equal(a, flatten(params_any)[k]) for k, a in flatten(params).items())


def test_export_round_trip_loads_in_transformers(hf_models, tmp_path):
  """save_hf_decoder -> transformers from_pretrained gives the original logits; our
  own re-import returns the exact params and config."""
  models, tokens = hf_models
  jobs = []
  for family, (path, _) in models.items():
    config, params = load_hf_decoder(str(path))
    out = tmp_path / family
    save_hf_decoder(config, params, str(out), max_shard_bytes=60_000 if family == "llama"
                    else 5 * 1024 ** 3)
    again_config, again = load_hf_decoder(str(out))
    assert again_config == config
    assert all(np.array_equal(a, flatten(again)[k]) for k, a in flatten(params).items())
    jobs.append({"name": family, "dir": str(out)})
  assert (tmp_path / "llama" / "model.safetensors.index.json").is_file()
  reloaded = _run_torch(jobs, tokens)
  for family, (_, reference) in models.items():
    assert np.abs(reloaded[family] - reference).max() < 1e-5, family


def test_native_round_trip_keeps_the_decoder_config(hf_models, tmp_path):
  models, tokens = hf_models
  config, params = load_hf_decoder(str(models["gemma"][0]))
  save_native(config, params, str(tmp_path / "native"))
  again_config, again = load_native(str(tmp_path / "native"))
  assert again_config == config
  np.testing.assert_array_equal(_logits(again_config, again, tokens),
                                _logits(config, params, tokens))


# -----------------------------------------------------------------------------
# Config reading and errors (hand-written config.json files, no torch).
# -----------------------------------------------------------------------------
def test_legacy_rope_fields_and_gemma_gelu_are_read():
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


def _write_config(path, **overrides):
  path.mkdir(parents=True, exist_ok=True)
  data = {"model_type": "qwen2", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
          **overrides}
  (path / "config.json").write_text(json.dumps(data))
  return data


def test_errors_name_the_file_and_tensor(tmp_path):
  _write_config(tmp_path / "m", model_type="mistral")
  # A model_type no family reads: one line naming it and the supported ones.
  with pytest.raises(CheckpointError, match=r"config\.json: model_type 'mistral' is not "
                     r"supported; supported: t5, mt5, llama, qwen2, qwen3, gemma$"):
    load_hf_decoder(str(tmp_path / "m"))
  _write_config(tmp_path / "sw", use_sliding_window=True)
  with pytest.raises(CheckpointError, match="sliding-window"):
    load_hf_decoder(str(tmp_path / "sw"))
  _write_config(tmp_path / "pickle")
  (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"\x80")
  with pytest.raises(CheckpointError, match="pickled"):
    load_hf_decoder(str(tmp_path / "pickle"))
  _write_config(tmp_path / "missing")
  save_file({"model.embed_tokens.weight": np.zeros((16, 8), np.float32)},
            str(tmp_path / "missing" / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"model.safetensors: tensor "
                     r"'model.layers.0.input_layernorm.weight' is missing"):
    load_hf_decoder(str(tmp_path / "missing"))
  save_file({"model.embed_tokens.weight": np.zeros((17, 8), np.float32)},
            str(tmp_path / "missing" / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"'model.embed_tokens.weight' has shape \(17, 8\), "
                     r"expected \(16, 8\)"):
    load_hf_decoder(str(tmp_path / "missing"))
