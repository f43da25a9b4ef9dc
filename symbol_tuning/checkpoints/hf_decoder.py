"""HuggingFace decoder-only checkpoints (Llama, Qwen2, Qwen3, Gemma) <-> our params.

A HF directory is config.json + model.safetensors (or sharded with
model.safetensors.index.json); pickled weights are never read (reading and
checking tensors and writing the directory are hf.py's, shared with the T5 loader).

Name mapping (HF Linear weights are (out, in) and are transposed; embeddings,
norm weights and biases are copied):
  model.embed_tokens.weight                    decoder/token_embedder/embedding
  model.layers.i.input_layernorm.weight        decoder/layers_i/pre_self_attention_layer_norm/scale
  model.layers.i.self_attn.{q,k,v,o}_proj.weight  .../self_attention/{query,key,value,out}/kernel
  model.layers.i.self_attn.{q,k,v,o}_proj.bias    .../self_attention/{query,key,value,out}/bias
  model.layers.i.self_attn.{q,k}_norm.weight   .../self_attention/{query,key}_norm/scale  (Qwen3)
  model.layers.i.post_attention_layernorm.weight  decoder/layers_i/pre_mlp_layer_norm/scale
  model.layers.i.mlp.{gate,up,down}_proj.weight   decoder/layers_i/mlp/{wi_0,wi_1,wo}/kernel
  model.norm.weight                            decoder/decoder_norm/scale
  lm_head.weight                               decoder/logits_dense/kernel  (untied only)

Family differences, all expressed by `DecoderConfig` fields: Qwen2 has q/k/v
biases; Qwen3 has per-head q/k RMS norms; Gemma scales embeddings by
sqrt(hidden_size), stores RMSNorm weights as w with the norm multiplying by
(1 + w), uses the tanh GELU and ties the output head to the embedding.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from symbol_tuning.checkpoints import CheckpointError, flatten
from symbol_tuning.checkpoints import hf as hf_lib
from symbol_tuning.model.decoder_config import DecoderConfig, FAMILIES

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM"}
_DEFAULT_TIED = {"llama": False, "qwen2": False, "qwen3": False, "gemma": True}
_ATTN = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
_MLP = (("gate", "wi_0"), ("up", "wi_1"), ("down", "wo"))
_SHAPE_AND_RUN_FIELDS = ("vocab_size", "d_model", "num_heads", "num_kv_heads", "head_dim",
                         "mlp_dim", "num_layers", "dtype", "dropout_rate", "remat")


def is_decoder_only_hf(data: dict[str, Any]) -> bool:
  """Whether a HF config.json dict describes a model this module loads."""
  return data.get("model_type") in FAMILIES


def name_map(config: DecoderConfig) -> list[tuple[str, str]]:
  """(HF tensor name, our param path) pairs for `config`, in a stable order."""
  pairs = [("model.embed_tokens.weight", "decoder/token_embedder/embedding")]
  for i in range(config.num_layers):
    hf, ours = f"model.layers.{i}", f"decoder/layers_{i}"
    pairs.append((f"{hf}.input_layernorm.weight", f"{ours}/pre_self_attention_layer_norm/scale"))
    for short, long in _ATTN:
      pairs.append((f"{hf}.self_attn.{short}_proj.weight", f"{ours}/self_attention/{long}/kernel"))
      if (config.qkv_bias and short != "o") or (config.out_bias and short == "o"):
        pairs.append((f"{hf}.self_attn.{short}_proj.bias", f"{ours}/self_attention/{long}/bias"))
    if config.qk_norm:
      for short, long in _ATTN[:2]:
        pairs.append((f"{hf}.self_attn.{short}_norm.weight",
                      f"{ours}/self_attention/{long}_norm/scale"))
    pairs.append((f"{hf}.post_attention_layernorm.weight", f"{ours}/pre_mlp_layer_norm/scale"))
    for short, long in _MLP:
      pairs.append((f"{hf}.mlp.{short}_proj.weight", f"{ours}/mlp/{long}/kernel"))
  pairs.append(("model.norm.weight", "decoder/decoder_norm/scale"))
  if not config.tie_embeddings:
    pairs.append(("lm_head.weight", "decoder/logits_dense/kernel"))
  return pairs


def transposed(our_name: str) -> bool:
  """Whether the HF tensor is the transpose of our param `our_name` (the Linear kernels)."""
  return our_name.endswith("/kernel")


# -----------------------------------------------------------------------------
# Config.
# -----------------------------------------------------------------------------
def _rope_from_hf(data: dict[str, Any], source: str) -> tuple[float, dict[str, Any]]:
  """(rope_theta, scaling dict) from transformers 5 `rope_parameters` or the older
  top-level `rope_theta` + `rope_scaling` (whose type key may be 'type')."""
  params = dict(data.get("rope_parameters") or {})
  if params and not {"rope_theta", "rope_type"} & set(params):
    raise CheckpointError(f"{source}: per-layer-type rope_parameters are not supported")
  legacy = dict(data.get("rope_scaling") or {})
  if "type" in legacy and "rope_type" not in legacy:
    legacy["rope_type"] = legacy.pop("type")
  params = {**legacy, **params}
  theta = float(params.pop("rope_theta", data.get("rope_theta", 10000.0)))
  if params.get("rope_type", "default") == "default":
    params = {}
  return theta, params


def config_from_hf(data: dict[str, Any], source: str = hf_lib.CONFIG_FILE) -> DecoderConfig:
  """DecoderConfig from a HF Llama / Qwen2 / Qwen3 / Gemma config.json dict."""
  family = data.get("model_type")
  if family not in FAMILIES:
    raise CheckpointError(f"{source}: model_type is {family!r}; decoder-only checkpoints of "
                          f"{', '.join(FAMILIES)} are supported")
  if data.get("mlp_bias"):
    raise CheckpointError(f"{source}: mlp_bias=true is not supported")
  if data.get("use_sliding_window") and "sliding_attention" in (data.get("layer_types") or
                                                                ["sliding_attention"]):
    raise CheckpointError(f"{source}: sliding-window attention (use_sliding_window=true) "
                          f"is not supported")
  act = data.get("hidden_activation") or data.get("hidden_act") or (
      "gelu_pytorch_tanh" if family == "gemma" else "silu")
  if family == "gemma" and act in ("gelu", "gelu_pytorch_tanh"):
    act = "gelu_tanh"  # transformers maps Gemma's legacy 'gelu' to the tanh form too
  elif act in ("gelu_pytorch_tanh", "gelu_new"):
    act = "gelu_tanh"
  if act not in ("silu", "gelu_tanh", "gelu"):
    raise CheckpointError(f"{source}: hidden activation {act!r} is not supported")
  try:
    theta, scaling = _rope_from_hf(data, source)
    heads = int(data["num_attention_heads"])
    attention_bias = bool(data.get("attention_bias", False))
    eos = data.get("eos_token_id")
    return DecoderConfig(
        family=family,
        vocab_size=int(data["vocab_size"]),
        d_model=int(data["hidden_size"]),
        num_heads=heads,
        num_kv_heads=int(data.get("num_key_value_heads") or heads),
        head_dim=int(data.get("head_dim") or int(data["hidden_size"]) // heads),
        mlp_dim=int(data["intermediate_size"]),
        num_layers=int(data["num_hidden_layers"]),
        activation=act,
        norm_epsilon=float(data.get("rms_norm_eps", 1e-6)),
        norm_scale_offset=1.0 if family == "gemma" else 0.0,
        embed_scale=family == "gemma",
        tie_embeddings=bool(data.get("tie_word_embeddings", _DEFAULT_TIED[family])),
        qkv_bias=True if family == "qwen2" else attention_bias,
        out_bias=False if family == "qwen2" else attention_bias,
        qk_norm=family == "qwen3",
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(data.get("max_position_embeddings") or 2048),
        bos_token_id=data.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=data.get("pad_token_id"),
    )
  except KeyError as e:
    raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from e
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{source}: invalid value ({e})") from e


def config_to_hf(config: DecoderConfig) -> dict[str, Any]:
  """config.json contents that transformers loads as this model."""
  if config.attn_logit_softcap or config.final_logit_softcap or config.query_pre_attn_scalar:
    raise CheckpointError(f"{config.family} export: soft-capping / query_pre_attn_scalar have "
                          f"no field in a {config.family} config.json")
  if config.family == "qwen2" and (not config.qkv_bias or config.out_bias):
    raise CheckpointError("qwen2 export: Qwen2 has q/k/v biases and no output bias")
  if config.family != "qwen2" and config.qkv_bias != config.out_bias:
    raise CheckpointError(f"{config.family} export: attention_bias covers q/k/v and o together")
  eos = config.eos_token_id
  data = {
      "architectures": [_ARCHITECTURES[config.family]],
      "model_type": config.family,
      "vocab_size": config.vocab_size,
      "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh",
                     "gelu": "gelu"}[config.activation],
      "rms_norm_eps": config.norm_epsilon,
      "max_position_embeddings": config.max_position_embeddings,
      "tie_word_embeddings": config.tie_embeddings,
      "rope_theta": config.rope_theta,
      "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default",
                          **dict(config.rope_scaling)},
      "bos_token_id": config.bos_token_id,
      "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
      "pad_token_id": config.pad_token_id,
      "use_cache": True,
      "torch_dtype": "float32",
  }
  if config.family != "qwen2":
    data["attention_bias"] = config.qkv_bias
  if config.family in ("qwen2", "qwen3"):
    data["use_sliding_window"] = False
  return data


# -----------------------------------------------------------------------------
# Loading and saving.
# -----------------------------------------------------------------------------
def load_hf_decoder(path: str, config: Optional[DecoderConfig] = None
                    ) -> tuple[DecoderConfig, dict]:
  """Loads a HF Llama / Qwen2 / Qwen3 / Gemma directory as (DecoderConfig, float32 params).

  `config`, if given, decides the expected shapes (a tensor that does not fit
  it raises CheckpointError naming the tensor); its dtype, dropout and remat
  are kept.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a directory")
  cfg_file = os.path.join(path, hf_lib.CONFIG_FILE)
  hf_config = config_from_hf(hf_lib._read_config(path), cfg_file)
  if config is not None:
    # Shapes and run settings from the given config (so a mismatch names the
    # tensor); the numerics the file knows (norms, RoPE, biases) from the file.
    hf_config = hf_config.replace(**{k: getattr(config, k) for k in _SHAPE_AND_RUN_FIELDS})
  source = hf_lib._TensorSource(path)

  from symbol_tuning.model import decoder_network  # pylint: disable=g-import-not-at-top
  expected = flatten(decoder_network.param_shapes(hf_config))
  flat: dict[str, np.ndarray] = {}
  for hf_name, ours in name_map(hf_config):
    hint = " (config.json has tie_word_embeddings=false)" if hf_name == "lm_head.weight" else ""
    flat[ours] = hf_lib.read_tensor(source, hf_name, expected[ours].shape, transposed(ours),
                                    hint)

  known = {n for n, _ in name_map(hf_config)}
  # A tied model may still store the head (a copy of the embedding); rotary
  # inverse frequencies are buffers some old exports saved.
  ignored = {"lm_head.weight"} if hf_config.tie_embeddings else set()
  unexpected = {k for k in source.keys() - known - ignored
                if not k.endswith("rotary_emb.inv_freq")}
  model = f"a {hf_config.num_layers}-layer {hf_config.family} model as config.json describes it"
  return hf_config, hf_lib.finish_load(source, flat, unexpected, model, hf_config, path)


def save_hf_decoder(config: DecoderConfig, params, path: str,
                    max_shard_bytes: int = 5 * 1024 ** 3) -> None:
  """Writes config.json + safetensors that transformers' <Family>ForCausalLM loads."""
  path = os.fspath(path)
  tensors = hf_lib.hf_tensors(config, params, name_map(config), transposed)
  hf_json = config_to_hf(config)  # validates before writing anything
  generation = {k: hf_json[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                if hf_json[k] is not None}
  hf_lib.write_model_dir(path, hf_json, generation, tensors, max_shard_bytes)


__all__ = ["load_hf_decoder", "save_hf_decoder", "name_map", "config_from_hf",
           "config_to_hf", "is_decoder_only_hf"]
