"""HuggingFace T5 v1.1 / Flan-T5 (model_type t5, mt5) <-> our T5 params and config.

Name mapping (HF Linear weights are (out, in) and get transposed; the
embedding is (vocab, embed) in both):
  shared.weight                                   token_embedder/embedding
  {enc,dec}.block.0.layer.0.SelfAttention.relative_attention_bias.weight (buckets, heads)
                                                  {enc,dec}/relpos_bias/rel_embedding (heads, buckets)
  encoder.block.i.layer.0.SelfAttention.{q,k,v,o} encoder/layers_i/attention/{query,key,value,out}
  encoder.block.i.layer.0.layer_norm              encoder/layers_i/pre_attention_layer_norm
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1,wo}  encoder/layers_i/mlp/...
  encoder.block.i.layer.1.layer_norm              encoder/layers_i/pre_mlp_layer_norm
  decoder.block.i.layer.0.SelfAttention / layer_norm     self_attention / pre_self_attention_layer_norm
  decoder.block.i.layer.1.EncDecAttention / layer_norm   encoder_decoder_attention / pre_cross_attention_layer_norm
  decoder.block.i.layer.2.DenseReluDense / layer_norm    mlp / pre_mlp_layer_norm
  {encoder,decoder}.final_layer_norm              {encoder,decoder}/{encoder,decoder}_norm
  lm_head.weight (vocab, embed)                   decoder/logits_dense/kernel (embed, vocab)

Output head. HF scales the decoder output by d_model**-0.5 when the config
says so (`scale_decoder_outputs`, written by transformers >= 5; older configs:
`tie_word_embeddings`, default true) and takes logits from `lm_head.weight`,
which is the shared embedding when tied. We map:
  tied + scaled   -> logits_via_embedding=True (t5x: embed^T / sqrt(d_model))
  untied, unscaled (Flan-T5, T5 v1.1) -> logits_dense = lm_head^T
  untied + scaled -> logits_dense = lm_head^T * d_model**-0.5 (same logits)
  tied, unscaled  -> logits_dense = shared^T (same logits; untied from here on)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from symbol_tuning.models.base import CheckpointError
from symbol_tuning.models import base
from symbol_tuning.models.t5.config import T5Config

_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            # Present (unused) in some old checkpoints.
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")
_ATTN = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
_MLP = ("wi_0", "wi_1", "wo")
_HEAD = "decoder/logits_dense/kernel"


def _shared_name(tensors) -> str:
  """Old exports store the embedding only as encoder.embed_tokens.weight."""
  if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
    return "encoder.embed_tokens.weight"
  return "shared.weight"


def _head(data: dict, tensors) -> tuple[bool, bool]:
  """(untied, scaled): whether lm_head.weight is a head of its own, and whether HF scales
  the decoder output by d_model**-0.5."""
  shared = _shared_name(tensors)
  scale = data.get("scale_decoder_outputs", data.get("tie_word_embeddings", True))
  # transformers >= 5 writes tie_word_embeddings=true even for untied models;
  # the head is untied whenever lm_head.weight is stored and differs.
  untied = "lm_head.weight" in tensors and (
      data.get("tie_word_embeddings") is False
      or shared not in tensors
      or tensors.shape("lm_head.weight") != tensors.shape(shared)
      or not np.array_equal(tensors.get("lm_head.weight"), tensors.get(shared)))
  return untied, bool(scale)


class T5HFMapping(base.HFMapping):
  """T5 v1.1 / Flan-T5 (and mT5, the same architecture)."""

  model_types = ("t5", "mt5")

  def name_map(self, config: T5Config) -> list[tuple[str, str]]:
    pairs = [("shared.weight", "token_embedder/embedding")]
    for stack, n_layers in (("encoder", config.num_encoder_layers),
                            ("decoder", config.num_decoder_layers)):
      pairs.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    f"{stack}/relpos_bias/rel_embedding"))
      for i in range(n_layers):
        hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
        if stack == "encoder":
          attns = [(f"{hf}.0.SelfAttention", f"{ours}/attention")]
          norms = [(f"{hf}.0.layer_norm", f"{ours}/pre_attention_layer_norm"),
                   (f"{hf}.1.layer_norm", f"{ours}/pre_mlp_layer_norm")]
          mlp = f"{hf}.1.DenseReluDense"
        else:
          attns = [(f"{hf}.0.SelfAttention", f"{ours}/self_attention"),
                   (f"{hf}.1.EncDecAttention", f"{ours}/encoder_decoder_attention")]
          norms = [(f"{hf}.0.layer_norm", f"{ours}/pre_self_attention_layer_norm"),
                   (f"{hf}.1.layer_norm", f"{ours}/pre_cross_attention_layer_norm"),
                   (f"{hf}.2.layer_norm", f"{ours}/pre_mlp_layer_norm")]
          mlp = f"{hf}.2.DenseReluDense"
        for hf_attn, our_attn in attns:
          for short, long in _ATTN:
            pairs.append((f"{hf_attn}.{short}.weight", f"{our_attn}/{long}/kernel"))
        for hf_norm, our_norm in norms:
          pairs.append((f"{hf_norm}.weight", f"{our_norm}/scale"))
        for w in _MLP:
          pairs.append((f"{mlp}.{w}.weight", f"{ours}/mlp/{w}/kernel"))
      pairs.append((f"{stack}.final_layer_norm.weight", f"{stack}/{stack}_norm/scale"))
    if not config.logits_via_embedding:
      pairs.append(("lm_head.weight", _HEAD))
    return pairs

  def transposed(self, our_name: str) -> bool:
    return our_name != "token_embedder/embedding" and not our_name.endswith("/scale")

  def config_from_hf(self, data: dict[str, Any], source: str, tensors=None,
                     config: T5Config | None = None) -> T5Config:
    """T5Config from a HF T5 config.json dict (validated: T5 v1.1, gated-gelu). With
    `tensors`, the head (tied or not) is read from the weights; with `config`, its shapes
    and run settings win and the numerics the file knows come from the file."""
    model_type = data.get("model_type")
    if model_type not in self.model_types:
      raise CheckpointError(
          f"{source}: model_type is {model_type!r}; only T5 v1.1 / Flan-T5 "
          f"('t5', gated-gelu) checkpoints are supported")
    ff = data.get("feed_forward_proj", "relu")
    if ff != "gated-gelu":
      raise CheckpointError(
          f"{source}: feed_forward_proj is {ff!r}"
          + (" (T5 v1.0)" if ff == "relu" else "")
          + "; only 'gated-gelu' (T5 v1.1 / Flan-T5) is supported")
    via_embedding = False
    if tensors is not None:
      untied, scaled = _head(data, tensors)
      if "lm_head.weight" not in tensors and data.get("tie_word_embeddings") is False:
        raise CheckpointError(
            f"{tensors.file_of('lm_head.weight')}: tensor 'lm_head.weight' is missing "
            f"(config.json has tie_word_embeddings=false)")
      via_embedding = scaled and not untied
    try:
      num_layers = int(data["num_layers"])
      hf_config = T5Config(
          vocab_size=int(data["vocab_size"]),
          d_model=int(data["d_model"]),
          num_heads=int(data["num_heads"]),
          head_dim=int(data["d_kv"]),
          mlp_dim=int(data["d_ff"]),
          num_encoder_layers=num_layers,
          num_decoder_layers=int(data.get("num_decoder_layers") or num_layers),
          dropout_rate=float(data.get("dropout_rate", 0.1)),
          relative_attention_num_buckets=int(data.get("relative_attention_num_buckets", 32)),
          relative_attention_max_distance=int(data.get("relative_attention_max_distance", 128)),
          layer_norm_epsilon=float(data.get("layer_norm_epsilon", 1e-6)),
          logits_via_embedding=via_embedding,
      )
    except KeyError as e:
      raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from e
    except (TypeError, ValueError) as e:
      raise CheckpointError(f"{source}: invalid value ({e})") from e
    if config is None:
      return hf_config
    return config.replace(
        logits_via_embedding=via_embedding,
        relative_attention_max_distance=hf_config.relative_attention_max_distance,
        layer_norm_epsilon=hf_config.layer_norm_epsilon)

  def read_params(self, tensors, config: T5Config, data: dict, read) -> dict:
    """The name map's tensors, the embedding under its old name if need be; a tied but
    unscaled head is kept as an untied one, an untied scaled head gets the scale folded in."""
    untied, scaled = _head(data, tensors)
    shared = _shared_name(tensors)
    flat = {}
    for hf_name, ours in self.name_map(config):
      if hf_name == "lm_head.weight" and not untied:
        continue  # tied: filled from the shared embedding below
      flat[ours] = read(shared if hf_name == "shared.weight" else hf_name, ours, "")
    if not untied and not config.logits_via_embedding:
      flat[_HEAD] = np.ascontiguousarray(tensors.get(shared).T)
    elif untied and scaled:
      flat[_HEAD] = flat[_HEAD] * np.float32(config.d_model ** -0.5)
    return flat

  def ignored(self, hf_name: str, config: T5Config) -> bool:
    # lm_head.weight: a tied model's copy of the embedding.
    return hf_name in _IGNORED or hf_name == "lm_head.weight"

  def config_to_hf(self, config: T5Config) -> dict[str, Any]:
    tied = config.logits_via_embedding
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        # transformers 4.x reads tie_word_embeddings (and scales iff tied);
        # 5.x always ties unless lm_head.weight differs from shared.weight in
        # the file, and reads the scaling from scale_decoder_outputs.
        "tie_word_embeddings": tied,
        "scale_decoder_outputs": tied,
        "torch_dtype": "float32",
    }

  def generation_config(self, config: T5Config) -> dict[str, Any]:
    return {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}

  def describe(self, config: T5Config) -> str:
    return (f"a {config.num_encoder_layers}+{config.num_decoder_layers}-layer "
            f"T5 v1.1 model")


HF_MAPPING = T5HFMapping()
