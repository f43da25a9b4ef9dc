"""One interface over the model families: T5 encoder-decoder and decoder-only.

Callers that hold a config of either kind use these functions instead of
importing a family's network module:

  family.is_decoder_only(config)      DecoderConfig -> True, T5Config -> False
  family.module(config)               the Flax module (network.Transformer / DecoderOnlyTransformer)
  family.init_params(config, rng)     float32 params
  family.param_shapes(config)         tree of ShapeDtypeStruct
  family.get_logical_axes(config)     tree of PartitionSpec of logical axis names
  family.config_from_dict(data)       model_config.json -> config of the right family
  family.get_config(name)             named config of either family ('tiny', 'llama-tiny', ...)
"""
from __future__ import annotations

from typing import Any, Mapping, Union

from symbol_tuning.model import config as t5_config
from symbol_tuning.model import decoder_config
from symbol_tuning.model.config import T5Config
from symbol_tuning.model.decoder_config import DecoderConfig

ModelConfig = Union[T5Config, DecoderConfig]


def is_decoder_only(config: ModelConfig) -> bool:
  return isinstance(config, DecoderConfig)


def _network(config: ModelConfig):
  # Imported on use: the network modules pull in jax/flax.
  if is_decoder_only(config):
    from symbol_tuning.model import decoder_network  # pylint: disable=g-import-not-at-top
    return decoder_network
  if isinstance(config, T5Config):
    from symbol_tuning.model import network  # pylint: disable=g-import-not-at-top
    return network
  raise TypeError(f"not a model config: {type(config).__name__}")


def module(config: ModelConfig):
  net = _network(config)
  return (net.DecoderOnlyTransformer if is_decoder_only(config) else net.Transformer)(config)


def init_params(config: ModelConfig, rng=None) -> dict[str, Any]:
  return _network(config).init_params(config, rng)


def param_shapes(config: ModelConfig) -> dict[str, Any]:
  return _network(config).param_shapes(config)


def get_logical_axes(config: ModelConfig) -> dict[str, Any]:
  return _network(config).get_logical_axes(config)


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
  """{'architecture': 'decoder_only', ...} -> DecoderConfig; anything else -> T5Config."""
  if data.get("architecture") == decoder_config.ARCHITECTURE:
    return DecoderConfig.from_dict(data)
  return T5Config.from_dict(data)


def get_config(name: str, **overrides) -> ModelConfig:
  """A named config of either family: T5 ('tiny', 'small', 'flan-t5-base', ...) or
  decoder-only ('llama-tiny', 'llama-100m')."""
  if name in decoder_config.CONFIGS:
    return decoder_config.get_config(name, **overrides)
  try:
    return t5_config.get_config(name, **overrides)
  except ValueError as e:
    raise ValueError(f"{e}; decoder-only: {', '.join(decoder_config.CONFIGS)}") from None
