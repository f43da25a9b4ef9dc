"""Our decoder-only network (RoPE, grouped-query attention, RMSNorm, gated MLP: Llama / Mistral /
Qwen2 / Qwen3 / Gemma 1-3 by `DecoderConfig`) as the module of t5x's `DecoderOnlyModel`.

The gin files under gin/t5x/models/ (e.g. llama_3_2_1b.gin) bind

  MODEL = @t5x_module.DecoderOnlyModel()
  t5x_module.DecoderOnlyModel.module = @t5x_module.T5xDecoder()
  t5x_module.T5xDecoder.config = @t5x_module.decoder_config()
  t5x_module.decoder_config: d_model = 2048, num_heads = 32, ...   (DecoderConfig's fields)

The parameter tree is `decoder_network`'s ({'decoder': {'token_embedder', 'layers_<i>',
'decoder_norm', 'logits_dense'}}), so `symbol-tuning convert HF_DIR DST --to t5x` writes a
checkpoint t5x.train starts from, and the checkpoints t5x writes read back with our CLI.
Logical axis names are t5x's (vocab, embed, joined_kv, mlp; activations batch, length,
heads, kv): t5x's standard partitioning rules shard them over the 'model' mesh axis.

t5x scores (score_batch: training, rank evaluation) through this module. Generation
(predict_batch: t5x's prefill with per-example cache indices) is not wired to our KV cache:
`DecoderOnlyModel.predict_batch_with_aux` says so in one line; evaluate with the rank
mixtures (symbol_tuning_eval_*_rank_*) or with `symbol-tuning eval`, which decodes.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from etils import epath
from flax import core as flax_core
from flax import linen as nn
from flax.linen import partitioning as flax_partitioning
import jax
from t5x import models

from symbol_tuning.models.base import CONFIG_FILE, config_json
from symbol_tuning.models.decoder.config import DecoderConfig
from symbol_tuning.models.decoder.network import DecoderOnly



def decoder_config(model_dir: Optional[str] = None, **fields) -> DecoderConfig:
  """A DecoderConfig from gin bindings; with `model_dir` (t5x.train's MODEL_DIR) it is also
  written to MODEL_DIR/model_config.json (process 0, once), so `symbol-tuning eval` and
  `convert` read the checkpoints t5x writes there without being told the shape.

  decoder_config(d_model=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128,
                 num_layers=2, vocab_size=8064) -> DecoderConfig(family='llama', d_model=64, ...)
  """
  config = DecoderConfig(**fields)
  if model_dir and jax.process_index() == 0:
    path = epath.Path(model_dir) / CONFIG_FILE
    if not path.exists():
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(config_json(config))
  return config


class T5xDecoder(nn.Module):
  """`decoder_network.DecoderOnly` under the 'decoder' scope, with the call signature of
  t5x's examples/decoder_only DecoderWrapper (which `models.DecoderOnlyModel` calls)."""
  config: DecoderConfig

  def setup(self):
    self.decoder = DecoderOnly(self.config)

  def __call__(self, decoder_input_tokens, decoder_target_tokens=None,
               decoder_segment_ids=None, decoder_positions=None,
               decoder_causal_attention=None, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None,
               prefill: bool = False, prefill_lengths=None):
    if prefill or prefill_lengths is not None:
      raise NotImplementedError(_NO_PREDICT)
    return self.decoder(decoder_input_tokens, decoder_target_tokens,
                        decoder_segment_ids=decoder_segment_ids,
                        decoder_positions=decoder_positions,
                        decoder_causal_attention=decoder_causal_attention,
                        enable_dropout=enable_dropout, decode=decode,
                        max_decode_length=max_decode_length)


_NO_PREDICT = ("t5x generation (predict) is not supported for symbol_tuning's decoder-only "
               "module: evaluate with a rank mixture (symbol_tuning_eval_*_rank_*), which "
               "t5x scores, or decode with `symbol-tuning eval`")


def params_axes(boxed_params: Mapping[str, Any]) -> dict[str, Any]:
  """t5x's 'params_axes' collection for flax's boxed (nn.Partitioned) params: a
  `<name>_axes` AxisMetadata beside each parameter, as flax's param_with_axes writes it.

  {'decoder': {'decoder_norm': {'scale': Partitioned(names=('embed',))}}}
    -> {'decoder': {'decoder_norm': {'scale_axes': AxisMetadata(names=('embed',))}}}
  """
  out = {}
  for key, value in boxed_params.items():
    if isinstance(value, nn.Partitioned):
      out[f"{key}_axes"] = flax_partitioning.AxisMetadata(names=tuple(value.names))
    elif isinstance(value, Mapping):
      out[key] = params_axes(value)
    else:
      raise TypeError(f"parameter {key!r} has no logical axis names")
  return out


class DecoderOnlyModel(models.DecoderOnlyModel):
  """t5x's DecoderOnlyModel for `T5xDecoder`: its initial variables hold plain arrays plus
  t5x's 'params_axes' (t5x reads partitioning from that collection; our layers declare
  their axes with flax's nn.with_logical_partitioning boxes instead)."""

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    variables = flax_core.unfreeze(super().get_initial_variables(rng, input_shapes,
                                                                 input_types))
    boxed = variables["params"]
    variables["params"] = nn.unbox(boxed)
    variables["params_axes"] = params_axes(boxed)
    return flax_core.freeze(variables)

  def predict_batch_with_aux(self, params, batch, rng=None, **kwargs):
    raise NotImplementedError(_NO_PREDICT)
