"""HF decoder-only checkpoints: import parity with transformers, export round trip, errors.

transformers/torch run only in a separate process (`_run_torch`): torch segfaults
when imported where TensorFlow already is (pytest collection imports TF). The
child writes tiny random models with `save_pretrained` and their logits to a
safetensors file; nothing is pickled.
"""
import json
import os
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from symbol_tuning.checkpoints import (CheckpointError, flatten, load_any,  # noqa: E402
                                       load_native, save_native)
from symbol_tuning.checkpoints.hf_decoder import (config_from_hf, load_hf_decoder,  # noqa: E402
                                                  save_hf_decoder)
from symbol_tuning.model import decoder_network  # noqa: E402

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

_TORCH_SCRIPT = r"""
import json, sys
import numpy as np, torch, transformers
from safetensors.numpy import load_file, save_file
spec = json.load(open(sys.argv[1]))
tokens = torch.tensor(load_file(spec["tokens"])["tokens"].astype(np.int64))
out = {}
for job in spec["jobs"]:
  if "config" in job:  # make a random model and save it
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(job["model_type"], **job["config"])
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # weights far from their init: norms, biases, all of it
      for name, p in model.named_parameters():
        p.add_(0.2 * torch.randn_like(p)) if p.ndim == 1 else p.normal_(0.0, 0.2)
    model.save_pretrained(job["dir"], **({"max_shard_size": "40KB"} if job.get("shard") else {}))
  model = transformers.AutoModelForCausalLM.from_pretrained(job["dir"])
  model.eval()
  with torch.no_grad():
    out[job["name"]] = model(input_ids=tokens).logits.float().numpy()
save_file(out, spec["out"])
"""


def _run_torch(tmp_path, jobs, tokens):
  """Runs `jobs` in a child Python with torch/transformers; returns {name: logits}.

  A job is {'name', 'dir'} (load a saved model) or also {'model_type', 'config',
  'shard'} (make a random one and save it to 'dir' first).
  """
  pytest.importorskip("transformers")
  tok_file, out_file, spec_file = (tmp_path / "tokens.safetensors", tmp_path / "logits.safetensors",
                                   tmp_path / "spec.json")
  save_file({"tokens": tokens.astype(np.int32)}, str(tok_file))
  spec_file.write_text(json.dumps({"jobs": jobs, "tokens": str(tok_file), "out": str(out_file)}))
  env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
  proc = subprocess.run([sys.executable, "-c", _TORCH_SCRIPT, str(spec_file)], env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return load_file(str(out_file))


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
  logits = _run_torch(tmp, jobs, tokens)
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
  reloaded = _run_torch(tmp_path, jobs, tokens)
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
  with pytest.raises(CheckpointError, match="model_type is 'mistral'"):
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
