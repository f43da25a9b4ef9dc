"""T5 v1.1 (Flan-T5) model: config, Flax network, helpers."""
from symbol_tuning.model.config import CONFIGS, T5Config, get_config
from symbol_tuning.model.network import (Decoder, Encoder, Transformer, get_logical_axes,
                                         init_cache, init_params, param_shapes)

__all__ = [
    "CONFIGS", "T5Config", "get_config", "Transformer", "Encoder", "Decoder",
    "init_params", "param_shapes", "get_logical_axes", "init_cache",
]
