"""The T5 v1.1 (Flan-T5) encoder-decoder family: its `ModelFamily` implementation."""
from __future__ import annotations

from typing import Any, Mapping

from symbol_tuning.models import base
from symbol_tuning.models.t5 import config as config_lib
from symbol_tuning.models.t5.config import T5Config


class T5Family(base.ModelFamily):
  """Prompt into the encoder, answer out of the decoder (t5x's EncoderDecoderModel)."""

  name = "t5"
  package = "symbol_tuning.models.t5"
  config_cls = T5Config
  answer_in_sequence = False
  config_in_t5x_shapes = True

  def knows_config(self, name: str) -> bool:
    return config_lib.config_key(name) in self.configs

  def feature_lengths(self, lengths) -> dict:
    """{'inputs': I, 'targets': T}; a single length is refused (it is a one-sequence
    model's)."""
    lengths = {"targets": lengths} if isinstance(lengths, int) else dict(lengths)
    if "inputs" not in lengths:
      raise ValueError(f"TASK_FEATURE_LENGTHS {lengths} has no 'inputs': a single length is "
                       "for decoder-only models; an encoder-decoder model needs "
                       "{'inputs': ..., 'targets': ...}")
    return lengths

  def forward(self, module, params, batch, *, enable_dropout, rngs=None, prefix_lm=False):
    del prefix_lm  # refused by the trainer: `prefix_lm` is False for this family
    # Positions are not passed, as in t5x's T5 network: relative-position buckets from
    # token indices equal those from per-segment positions wherever attention is allowed
    # (segments are masked off from each other), and cost a (1, heads, q, k) bias instead
    # of a per-example (batch, heads, q, k) one.
    return module.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"), enable_dropout=enable_dropout, rngs=rngs)

  def batch_counts(self, batch: Mapping[str, Any]) -> tuple[int, int]:
    """Example: encoder segment ids [[1, 1, 2, 0]], 3 input and 2 target tokens -> (2, 5)."""
    segments = batch.get("encoder_segment_ids")
    inputs = batch["encoder_input_tokens"]
    examples = int(segments.max(axis=1).sum()) if segments is not None else len(inputs)
    return examples, int((inputs > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())

  def train_flops(self, config: T5Config, batch: int, lengths: Mapping[str, int]) -> float:
    enc_len, dec_len = lengths["inputs"], lengths["targets"]
    d, inner, mlp = config.d_model, config.inner_dim, config.mlp_dim
    enc_token = config.num_encoder_layers * (2 * 4 * d * inner + 2 * 3 * d * mlp
                                             + 2 * 2 * enc_len * inner)
    dec_token = config.num_decoder_layers * (
        2 * 4 * d * inner + 2 * 2 * dec_len * inner  # self-attention
        + 2 * 2 * d * inner + 2 * 2 * enc_len * inner  # cross-attention q, o and scores
        + 2 * 3 * d * mlp) + 2 * d * config.vocab_size  # MLP, logits
    cross_kv = config.num_decoder_layers * 2 * 2 * d * inner  # per encoder token
    forward = batch * (enc_len * (enc_token + cross_kv) + dec_len * dec_token)
    return 3.0 * forward


FAMILY = T5Family()
