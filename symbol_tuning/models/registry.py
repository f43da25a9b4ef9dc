"""The registry of model families: the one place that knows the family list.

  registry.FAMILIES                      {'t5': T5Family, 'decoder': DecoderFamily}
  registry.family_of(config)             the family of a config (by its architecture tag)
  registry.get_family('decoder')         by name (benchmarks' --family)
  registry.for_hf_model_type('qwen2')    the family that reads a HF config.json model_type
  registry.get_config('llama-tiny')      a named config of any family
  registry.config_from_dict(data)        model_config.json -> config of its family

A new family is a folder under models/ (config, network, features, inference, hf,
family) and one entry in FAMILIES below.
"""
from __future__ import annotations

from typing import Any, Mapping

from symbol_tuning.models.base import ModelConfig, ModelFamily
from symbol_tuning.models.decoder.family import FAMILY as _DECODER
from symbol_tuning.models.t5.family import FAMILY as _T5

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (_T5, _DECODER)}
_BY_ARCHITECTURE = {f.architecture: f for f in FAMILIES.values()}
# model_config.json files written before configs carried their tag are T5 ones.
_UNTAGGED = _T5


def get_family(name: str) -> ModelFamily:
  if name not in FAMILIES:
    raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
  return FAMILIES[name]


def family_of(config: ModelConfig) -> ModelFamily:
  family = _BY_ARCHITECTURE.get(getattr(config, "architecture", None))
  if family is None or not isinstance(config, family.config_cls):
    raise TypeError(f"not a model config: {type(config).__name__}")
  return family


def for_hf_model_type(model_type) -> ModelFamily:
  """ValueError (one line naming it and the supported ones) for a model_type no family reads."""
  for family in FAMILIES.values():
    if model_type in family.hf.model_types:
      return family
  supported = [t for f in FAMILIES.values() for t in f.hf.model_types]
  raise ValueError(f"model_type {model_type!r} is not supported; supported: "
                   f"{', '.join(supported)}")


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
  """model_config.json -> the config of the family its 'architecture' tag names."""
  tag = data.get("architecture")
  if tag is None:
    return _UNTAGGED.config_from_dict(data)
  if tag not in _BY_ARCHITECTURE:
    raise ValueError(f"model config: architecture {tag!r} is not supported; supported: "
                     f"{', '.join(_BY_ARCHITECTURE)}")
  return _BY_ARCHITECTURE[tag].config_from_dict(data)


def config_names() -> dict[str, list[str]]:
  """{family name: its named configs}."""
  return {name: list(f.configs) for name, f in FAMILIES.items()}


def get_config(name: str, **overrides) -> ModelConfig:
  """A named config of any family: T5 ('tiny', 'small', 'flan-t5-base', ...) or
  decoder-only ('llama-tiny', 'mistral-tiny', 'gemma2-tiny', 'gemma3-tiny', and a ~100M config
  per architecture: 'llama-100m', 'qwen3-100m', 'gemma2-100m', ...)."""
  for family in FAMILIES.values():
    if family.knows_config(name):
      return family.get_config(name, **overrides)
  known = "; ".join(f"{n}: {', '.join(c)}" for n, c in config_names().items())
  raise ValueError(f"unknown model config {name!r}; known: {known}")


def init_params(config: ModelConfig, rng=None) -> dict[str, Any]:
  return family_of(config).init_params(config, rng)


def param_shapes(config: ModelConfig) -> dict[str, Any]:
  return family_of(config).param_shapes(config)


def get_logical_axes(config: ModelConfig) -> dict[str, Any]:
  return family_of(config).get_logical_axes(config)
