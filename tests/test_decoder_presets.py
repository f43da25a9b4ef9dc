"""The ~100M decoder-only configs, one per architecture (benchmarks/train_step.py --arch):
each builds, carries its architecture's parameters, is ~100M parameters by the real init
shapes (jax.eval_shape, nothing computed) and has positive FLOPs per token from the family."""
import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from flax import traverse_util  # noqa: E402

from symbol_tuning.models import registry  # noqa: E402
from symbol_tuning.models.decoder.config import ARCH_100M, FAMILIES  # noqa: E402

# Parameters: the untied presets hold two 32k x 768 tables (112M), the tied
# Gemmas one (88M).
PARAM_BAND = (80e6, 120e6)
ROW = {"targets": 512}  # the benchmark's rows


def flat_shapes(name):
  return traverse_util.flatten_dict(registry.param_shapes(registry.get_config(name)), sep="/")


def test_one_preset_per_architecture():
  family_of = {registry.get_config(name).family for name in ARCH_100M.values()}
  assert family_of == set(FAMILIES)


@pytest.mark.parametrize("arch", sorted(ARCH_100M))
def test_preset_builds_with_its_features_at_100m(arch):
  config = registry.get_config(ARCH_100M[arch])
  shapes = flat_shapes(ARCH_100M[arch])
  num_params = sum(math.prod(s.shape) for s in shapes.values())
  assert PARAM_BAND[0] <= num_params <= PARAM_BAND[1], f"{arch}: {num_params:,} parameters"
  layer0 = {k.split("layers_0/", 1)[1] for k in shapes if "/layers_0/" in k}
  # The architecture's features appear as parameters (or, tied, as a missing head).
  assert ("self_attention/query/bias" in layer0) == config.qkv_bias
  assert ("self_attention/key_norm/scale" in layer0) == config.qk_norm
  assert ("post_mlp_layer_norm/scale" in layer0) == config.post_norms
  assert ("decoder/logits_dense/kernel" in shapes) == (not config.tie_embeddings)
  assert shapes["decoder/token_embedder/embedding"].shape == (config.vocab_size, config.d_model)


@pytest.mark.parametrize("arch", sorted(ARCH_100M))
def test_preset_flops_count_windows(arch):
  family = registry.get_family("decoder")
  config = registry.get_config(ARCH_100M[arch])
  flops = family.train_flops(config, 1, ROW)
  assert flops > 0
  # Same shapes without windows: every query would see the whole row.
  unwindowed = config.replace(sliding_window=None, layer_types=())
  local = [i for i in range(config.num_layers) if config.layer_window(i) is not None]
  q = config.num_heads * config.head_dim
  # Per local layer, forward + backward of the scores and weighted values over 512 - window
  # keys fewer, for each of the row's 512 queries.
  saved = sum(3 * 2 * 2 * q * 512 * (512 - config.layer_window(i)) for i in local)
  assert family.train_flops(unwindowed, 1, ROW) - flops == saved


def test_a_depth_override_keeps_the_familys_layer_pattern():
  """num_layers on a Gemma 2 preset re-derives its alternating local/global layers; a preset
  with layer_types written out asks for them with the new depth."""
  config = registry.get_config("gemma2-100m", num_layers=12)
  assert config.layer_types == ("sliding_attention", "full_attention") * 6
  with pytest.raises(ValueError, match="sets layer_types for its 3 layers"):
    registry.get_config("gemma3-tiny", num_layers=4)
