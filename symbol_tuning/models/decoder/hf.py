"""HuggingFace decoder-only checkpoints (Llama, Mistral, Qwen2, Qwen3, Gemma 1-3) <-> our
params and config.

The files (config.json + safetensors, never pickles) are read and written by
`checkpoints/hf.py`, the one HF loader of every family; this is the family's side.

Name mapping (HF Linear weights are (out, in) and are transposed; embeddings,
norm weights and biases are copied):
  model.embed_tokens.weight                    decoder/token_embedder/embedding
  model.layers.i.input_layernorm.weight        decoder/layers_i/pre_self_attention_layer_norm/scale
  model.layers.i.self_attn.{q,k,v,o}_proj.weight  .../self_attention/{query,key,value,out}/kernel
  model.layers.i.self_attn.{q,k,v,o}_proj.bias    .../self_attention/{query,key,value,out}/bias
  model.layers.i.self_attn.{q,k}_norm.weight   .../self_attention/{query,key}_norm/scale  (Qwen3)
  model.layers.i.post_attention_layernorm.weight  decoder/layers_i/pre_mlp_layer_norm/scale
    (Gemma 2, post_norms: post_attention_layernorm -> .../post_self_attention_layer_norm,
     pre_feedforward_layernorm -> .../pre_mlp_layer_norm,
     post_feedforward_layernorm -> .../post_mlp_layer_norm)
  model.layers.i.mlp.{gate,up,down}_proj.weight   decoder/layers_i/mlp/{wi_0,wi_1,wo}/kernel
  model.norm.weight                            decoder/decoder_norm/scale
  lm_head.weight                               decoder/logits_dense/kernel  (untied only)

Family differences, all expressed by `DecoderConfig` fields: Qwen2 has q/k/v
biases; Qwen3 has per-head q/k RMS norms; Gemma scales embeddings by
sqrt(hidden_size), stores RMSNorm weights as w with the norm multiplying by
(1 + w), uses the tanh GELU and ties the output head to the embedding. Mistral is
Llama's layout with a sliding window on every layer (`sliding_window`; null for none);
Qwen2/Qwen3 with use_sliding_window=true window the layers `layer_types` marks
sliding_attention (by default those from max_window_layers on). Gemma 2 is Gemma with
sandwich norms (post_norms), local (windowed) and global layers alternating,
query_pre_attn_scalar and attention / final logit soft-capping. Gemma 3 (text,
model_type gemma3_text) is Gemma 2 with QK-norm, five local layers to a global one, no
soft-capping and RoPE per layer type (local: base 10,000; global: rope_theta and its
scaling), read from `rope_parameters` by layer type or the older rope_local_base_freq.
"""
from __future__ import annotations

from typing import Any

from symbol_tuning.models.base import CheckpointError
from symbol_tuning.models import base
from symbol_tuning.models.decoder.config import (DecoderConfig, FAMILIES, POST_NORM_FAMILIES,
                                                 GEMMA_PATTERNS, gemma_layer_types)

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM",
                  "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
_DEFAULT_TIED = {"llama": False, "mistral": False, "qwen2": False, "qwen3": False, "gemma": True,
                 "gemma2": True, "gemma3_text": True}
# (1 + w) norms, sqrt(d_model) embedding scale, tanh GELU
_GEMMAS = ("gemma", "gemma2", "gemma3_text")
# transformers' defaults where a Gemma 2 / 3 config.json leaves a field out.
_GEMMA_DEFAULTS = {
    "gemma2": {"query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
               "final_logit_softcapping": 30.0},
    "gemma3_text": {"query_pre_attn_scalar": 256, "attn_logit_softcapping": None,
                    "final_logit_softcapping": None}}
_GEMMA3_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}
_ATTN = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
_MLP = (("gate", "wi_0"), ("up", "wi_1"), ("down", "wo"))
_SHAPE_AND_RUN_FIELDS = ("vocab_size", "d_model", "num_heads", "num_kv_heads", "head_dim",
                         "mlp_dim", "num_layers", "dtype", "dropout_rate", "remat")


# -----------------------------------------------------------------------------
# Config.
# -----------------------------------------------------------------------------
def _gemma3_rope_from_hf(data: dict[str, Any], source: str) -> tuple[float, dict, float]:
  """(global theta, global scaling, local theta) of a Gemma 3 config.json: transformers 5's
  rope_parameters by layer type, or rope_theta / rope_scaling / rope_local_base_freq."""
  params = dict(data.get("rope_parameters") or {})
  if "full_attention" not in params:  # the older fields
    params = {"full_attention": {**(data.get("rope_scaling") or {}), **params},
              "sliding_attention": {"rope_theta": data.get("rope_local_base_freq")}}
    params["full_attention"].setdefault("rope_theta", data.get("rope_theta"))
  full = {k: v for k, v in (params["full_attention"] or {}).items() if v is not None}
  local = {k: v for k, v in (params.get("sliding_attention") or {}).items() if v is not None}
  if local.get("rope_type", "default") != "default":
    raise CheckpointError(f"{source}: a {local['rope_type']!r} RoPE on the sliding-window "
                          f"layers is not supported (only the default)")
  full.setdefault("rope_theta", _GEMMA3_THETA["full_attention"])
  theta, scaling = _rope_from_hf({"rope_parameters": full}, source)
  return theta, scaling, float(local.get("rope_theta") or _GEMMA3_THETA["sliding_attention"])


def _rope_from_hf(data: dict[str, Any], source: str) -> tuple[float, dict[str, Any]]:
  """(rope_theta, scaling dict) from transformers 5 `rope_parameters` or the older
  top-level `rope_theta` + `rope_scaling` (whose type key may be 'type')."""
  params = dict(data.get("rope_parameters") or {})
  if params and not {"rope_theta", "rope_type"} & set(params):
    raise CheckpointError(f"{source}: per-layer-type rope_parameters are not supported")
  legacy = dict(data.get("rope_scaling") or {})
  if "type" in params and "rope_type" not in params:
    params["rope_type"] = params.pop("type")
  if "type" in legacy and "rope_type" not in legacy:
    legacy["rope_type"] = legacy.pop("type")
  params = {**legacy, **params}
  theta = float(params.pop("rope_theta", data.get("rope_theta", 10000.0)))
  if params.get("rope_type", "default") == "default":
    params = {}
  return theta, params


def _window_from_hf(data: dict[str, Any], family: str) -> tuple[Any, tuple]:
  """(sliding_window, layer_types) as transformers reads them: Mistral windows every layer;
  Qwen2/3 only with use_sliding_window, the layers from max_window_layers on; Gemma 2
  alternates (sliding first), Gemma 3 has 5 sliding layers to a full one (its
  sliding_window_pattern); `layer_types` in the file wins; Llama and Gemma never."""
  window = data.get("sliding_window", 4096)  # transformers' default where it has one
  if window is None or family in ("llama", "gemma"):
    return None, ()
  if family == "mistral":
    return int(window), ()
  layers = int(data["num_hidden_layers"])
  if family in ("qwen2", "qwen3"):
    if not data.get("use_sliding_window"):
      return None, ()
    first = int(data.get("max_window_layers", layers))
    default = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
  else:
    pattern = int(data.get("sliding_window_pattern") or GEMMA_PATTERNS[family])
    default = gemma_layer_types(layers, pattern)
  layer_types = tuple(data.get("layer_types") or default)
  if "sliding_attention" not in layer_types:
    return None, ()
  return int(window), layer_types


def _float_or_none(value):
  return None if value is None else float(value)


def config_from_hf(data: dict[str, Any], source: str = "config.json") -> DecoderConfig:
  """DecoderConfig from a HF Llama / Mistral / Qwen2 / Qwen3 / Gemma 1-3 config.json dict."""
  family = data.get("model_type")
  if family not in FAMILIES:
    raise CheckpointError(f"{source}: model_type is {family!r}; decoder-only checkpoints of "
                          f"{', '.join(FAMILIES)} are supported")
  if data.get("mlp_bias"):
    raise CheckpointError(f"{source}: mlp_bias=true is not supported")
  if data.get("use_bidirectional_attention"):  # Gemma 3 encoders (EmbeddingGemma)
    raise CheckpointError(f"{source}: use_bidirectional_attention=true is not supported")
  act = data.get("hidden_activation") or data.get("hidden_act") or (
      "gelu_pytorch_tanh" if family in _GEMMAS else "silu")
  if family == "gemma" and act in ("gelu", "gelu_pytorch_tanh"):
    act = "gelu_tanh"  # transformers maps Gemma's legacy 'gelu' to the tanh form too
  elif act in ("gelu_pytorch_tanh", "gelu_new"):
    act = "gelu_tanh"
  if act not in ("silu", "gelu_tanh", "gelu"):
    raise CheckpointError(f"{source}: hidden activation {act!r} is not supported")
  try:
    local_theta = None
    if family == "gemma3_text":
      theta, scaling, local_theta = _gemma3_rope_from_hf(data, source)
    else:
      theta, scaling = _rope_from_hf(data, source)
    heads = int(data["num_attention_heads"])
    attention_bias = bool(data.get("attention_bias", False))
    eos = data.get("eos_token_id")
    window, layer_types = _window_from_hf(data, family)
    gemma = {k: data.get(k, v) for k, v in _GEMMA_DEFAULTS.get(family, {}).items()}
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
        norm_scale_offset=1.0 if family in _GEMMAS else 0.0,
        embed_scale=family in _GEMMAS,
        tie_embeddings=bool(data.get("tie_word_embeddings", _DEFAULT_TIED[family])),
        qkv_bias=True if family == "qwen2" else attention_bias,
        out_bias=False if family == "qwen2" else attention_bias,
        qk_norm=family in ("qwen3", "gemma3_text"),
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_window=window,
        layer_types=layer_types,
        post_norms=family in POST_NORM_FAMILIES,
        query_pre_attn_scalar=_float_or_none(gemma.get("query_pre_attn_scalar")),
        attn_logit_softcap=_float_or_none(gemma.get("attn_logit_softcapping")),
        final_logit_softcap=_float_or_none(gemma.get("final_logit_softcapping")),
        local_rope_theta=local_theta,
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
  if config.post_norms != (config.family in POST_NORM_FAMILIES):
    raise CheckpointError(f"{config.family} export: post_norms={config.post_norms} is not "
                          f"a {config.family} block")
  if config.family not in _GEMMA_DEFAULTS and (
      config.attn_logit_softcap or config.final_logit_softcap or config.query_pre_attn_scalar):
    raise CheckpointError(f"{config.family} export: soft-capping / query_pre_attn_scalar have "
                          f"no field in a {config.family} config.json")
  if config.family == "qwen2" and (not config.qkv_bias or config.out_bias):
    raise CheckpointError("qwen2 export: Qwen2 has q/k/v biases and no output bias")
  if config.family != "qwen2" and config.qkv_bias != config.out_bias:
    raise CheckpointError(f"{config.family} export: attention_bias covers q/k/v and o together")
  if config.family == "mistral" and (config.qkv_bias or config.layer_types):
    raise CheckpointError("mistral export: Mistral has no attention biases and windows "
                          "every layer alike (layer_types must be empty)")
  if config.local_rope_theta is not None and config.family != "gemma3_text":
    raise CheckpointError(f"{config.family} export: only Gemma 3 has a local RoPE base")
  if config.sliding_window and config.family in ("llama", "gemma"):
    raise CheckpointError(f"{config.family} export: a {config.family} config.json has no "
                          f"sliding window")
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
  if config.family not in ("qwen2", "mistral"):
    data["attention_bias"] = config.qkv_bias
  if config.family in _GEMMA_DEFAULTS:
    if not float(config.query_pre_attn_scalar or 0).is_integer():
      raise CheckpointError(f"{config.family} export: query_pre_attn_scalar "
                            f"{config.query_pre_attn_scalar} is not an int, as config.json's is")
    data.update(hidden_activation=data.pop("hidden_act"),
                # transformers validates it as an int
                query_pre_attn_scalar=int(config.query_pre_attn_scalar or config.head_dim),
                attn_logit_softcapping=config.attn_logit_softcap,
                final_logit_softcapping=config.final_logit_softcap,
                sliding_window=config.sliding_window,
                layer_types=list(config.layer_types) or ["full_attention"] * config.num_layers)
  if config.family == "gemma3_text":
    local = config.rope_theta if config.local_rope_theta is None else config.local_rope_theta
    data.pop("rope_theta")
    data["rope_parameters"] = {
        "full_attention": data["rope_parameters"],
        "sliding_attention": {"rope_type": "default", "rope_theta": local}}
  if config.family == "mistral":
    data["sliding_window"] = config.sliding_window
  if config.family in ("qwen2", "qwen3"):
    windowed = config.sliding_window is not None
    data["use_sliding_window"] = windowed
    if windowed:
      types = config.layer_types or ("sliding_attention",) * config.num_layers
      data.update(sliding_window=config.sliding_window, layer_types=list(types),
                  max_window_layers=types.index("sliding_attention"))
  return data


class DecoderHFMapping(base.HFMapping):
  """Llama, Mistral, Qwen2, Qwen3 and Gemma 1-3 (the HF model_type is the config's
  `family`)."""

  model_types = FAMILIES

  def name_map(self, config: DecoderConfig) -> list[tuple[str, str]]:
    pairs = [("model.embed_tokens.weight", "decoder/token_embedder/embedding")]
    for i in range(config.num_layers):
      hf, ours = f"model.layers.{i}", f"decoder/layers_{i}"
      pairs.append((f"{hf}.input_layernorm.weight",
                    f"{ours}/pre_self_attention_layer_norm/scale"))
      for short, long in _ATTN:
        pairs.append((f"{hf}.self_attn.{short}_proj.weight",
                      f"{ours}/self_attention/{long}/kernel"))
        if (config.qkv_bias and short != "o") or (config.out_bias and short == "o"):
          pairs.append((f"{hf}.self_attn.{short}_proj.bias",
                        f"{ours}/self_attention/{long}/bias"))
      if config.qk_norm:
        for short, long in _ATTN[:2]:
          pairs.append((f"{hf}.self_attn.{short}_norm.weight",
                        f"{ours}/self_attention/{long}_norm/scale"))
      if config.post_norms:
        pairs += [(f"{hf}.post_attention_layernorm.weight",
                   f"{ours}/post_self_attention_layer_norm/scale"),
                  (f"{hf}.pre_feedforward_layernorm.weight", f"{ours}/pre_mlp_layer_norm/scale"),
                  (f"{hf}.post_feedforward_layernorm.weight",
                   f"{ours}/post_mlp_layer_norm/scale")]
      else:
        pairs.append((f"{hf}.post_attention_layernorm.weight",
                      f"{ours}/pre_mlp_layer_norm/scale"))
      for short, long in _MLP:
        pairs.append((f"{hf}.mlp.{short}_proj.weight", f"{ours}/mlp/{long}/kernel"))
    pairs.append(("model.norm.weight", "decoder/decoder_norm/scale"))
    if not config.tie_embeddings:
      pairs.append(("lm_head.weight", "decoder/logits_dense/kernel"))
    return pairs

  def transposed(self, our_name: str) -> bool:
    return our_name.endswith("/kernel")  # the Linear kernels

  def config_from_hf(self, data: dict[str, Any], source: str, tensors=None,
                     config: DecoderConfig | None = None) -> DecoderConfig:
    """With `config`, its shapes and run settings win (so a mismatch names the tensor);
    the numerics the file knows (norms, RoPE, biases) come from the file."""
    del tensors
    hf_config = config_from_hf(data, source)
    if config is None:
      return hf_config
    return hf_config.replace(**{k: getattr(config, k) for k in _SHAPE_AND_RUN_FIELDS})

  def read_params(self, tensors, config: DecoderConfig, data: dict, read) -> dict:
    del data
    return {ours: read(hf_name, ours, " (config.json has tie_word_embeddings=false)"
                       if hf_name == "lm_head.weight" else "")
            for hf_name, ours in self.name_map(config)}

  def ignored(self, hf_name: str, config: DecoderConfig) -> bool:
    # A tied model may still store the head (a copy of the embedding); rotary
    # inverse frequencies are buffers some old exports saved.
    return ((hf_name == "lm_head.weight" and config.tie_embeddings)
            or hf_name.endswith("rotary_emb.inv_freq"))

  def config_to_hf(self, config: DecoderConfig) -> dict[str, Any]:
    return config_to_hf(config)

  def generation_config(self, config: DecoderConfig) -> dict[str, Any]:
    hf_json = config_to_hf(config)
    return {k: hf_json[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
            if hf_json[k] is not None}

  def describe(self, config: DecoderConfig) -> str:
    return f"a {config.num_layers}-layer {config.family} model as config.json describes it"


HF_MAPPING = DecoderHFMapping()
