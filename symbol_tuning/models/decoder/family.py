"""The decoder-only family (Llama, Mistral, Qwen2, Qwen3, Gemma 1-3 by config): its
`ModelFamily`."""
from __future__ import annotations

from typing import Any, Mapping

from symbol_tuning.models import base
from symbol_tuning.models.decoder.config import DecoderConfig


class DecoderFamily(base.ModelFamily):
  """Prompt and answer in one sequence (t5x's DecoderOnlyModel)."""

  name = "decoder"
  package = "symbol_tuning.models.decoder"
  config_cls = DecoderConfig
  answer_in_sequence = True
  prefix_lm = True

  def feature_lengths(self, lengths) -> dict:
    """A single length L (or {'targets': L}): prompt + EOS + answer + EOS fit L together;
    {'inputs': I, 'targets': T} gives rows of I + T, as seqio's PrefixLM converter.

    Example: feature_lengths(544) -> {"targets": 544}
    """
    return {"targets": lengths} if isinstance(lengths, int) else dict(lengths)

  def forward(self, module, params, batch, *, enable_dropout, rngs=None, prefix_lm=False):
    # Per-segment positions restart RoPE in each packed example, as HF sees it alone.
    return module.apply(
        {"params": params}, batch["decoder_input_tokens"], batch["decoder_target_tokens"],
        batch.get("decoder_segment_ids"), batch.get("decoder_positions"),
        batch.get("decoder_causal_attention") if prefix_lm else None,
        enable_dropout=enable_dropout, rngs=rngs)

  def batch_counts(self, batch: Mapping[str, Any]) -> tuple[int, int]:
    """Token id 0 can be a real token: packed rows count tokens by segment id.

    Example: segment ids [[1, 1, 2, 0], [1, 1, 1, 0]] -> (3, 6)
    """
    segments = batch.get("decoder_segment_ids")
    targets = batch["decoder_target_tokens"]
    if segments is None:
      return len(targets), int((targets > 0).sum())
    return int(segments.max(axis=1).sum()), int((segments > 0).sum())

  def train_flops(self, config: DecoderConfig, batch: int, lengths: Mapping[str, int]) -> float:
    """Matmul FLOPs of a step, backward = 2x forward: per token and layer the q/k/v/out
    projections, the attention scores and weighted values, the gated MLP's three matmuls;
    then the logits (the tied head's too). Each query counts every key of its row (the
    causal and packed-segment masks do not skip work), a windowed layer's only
    min(window, row) keys (the work a windowed kernel needs). Not counted, being elementwise:
    norms (QK and sandwich norms too), biases, RoPE, soft-capping, softmax, the embedding
    gather (benchmarks/train_step.py reports XLA's count of everything beside this).

    Example: llama-100m, batch 2, {'targets': 512} -> 5.86e11; gemma2-100m's five
    window-256 layers count half the attention of its five global ones.
    """
    length = sum(lengths.values())
    d, q = config.d_model, config.num_heads * config.head_dim
    kv = config.num_kv_heads * config.head_dim
    per_token = 2 * d * config.vocab_size
    for layer in range(config.num_layers):
      window = config.layer_window(layer)
      keys = length if window is None else min(window, length)
      per_token += 2 * d * (2 * q + 2 * kv) + 2 * 2 * keys * q + 2 * 3 * d * config.mlp_dim
    return 3.0 * batch * length * per_token


FAMILY = DecoderFamily()
