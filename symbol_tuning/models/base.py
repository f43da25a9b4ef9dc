"""The model-family interface: everything that differs between architectures.

In the manner of t5x's BaseTransformerModel (EncoderDecoderModel / DecoderOnlyModel each
own their feature converter, loss inputs and scoring) and Levanter's LmConfig (a config
knows its HF mapping and FLOPs). A family is one folder under `symbol_tuning/models/`
with the same file names as the others:

  config.py     its frozen config dataclass (`architecture` tag, to_dict / from_dict) and
                named configs (CONFIGS, get_config)
  network.py    its Flax module over `models/layers.py` (MODULE) and `init_inputs`
  features.py   its seqio feature converter over the best-fit core `data/packing.py`
                (CONVERTER; SEQIO_CONVERTER, the seqio one it extends; MODEL_FEATURES)
  inference.py  the operations scoring needs (INFERENCE, an `Inference`)
  hf.py         its HF name map and config <-> config.json (HF_MAPPING, an `HFMapping`)
  family.py     its `ModelFamily` subclass (FAMILY): the one object the rest of the
                library calls; the files above are imported through it on first use

and one line in `models/registry.py`. Trainer, data, evaluation, checkpoints, CLI and
benchmarks call these methods and never ask which family they hold.
"""
from __future__ import annotations

import abc
import functools
import importlib
import json
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence


# A config's to_dict() (architecture-tagged) beside its params: native checkpoints, and t5x
# checkpoints of families whose shapes do not tell the config.
CONFIG_FILE = "model_config.json"


def config_json(config: "ModelConfig") -> str:
  """The text of CONFIG_FILE for `config`."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


class CheckpointError(ValueError):
  """A checkpoint is missing, malformed, or does not fit the model config (raised by the
  families' HF mappings and by symbol_tuning.checkpoints)."""


class ModelConfig(Protocol):
  """What every family's config offers (frozen, hashable dataclasses)."""

  architecture: str
  vocab_size: int
  dropout_rate: float
  dtype: str

  def replace(self, **overrides) -> "ModelConfig": ...
  def to_dict(self) -> dict[str, Any]: ...


class Inference(abc.ABC):
  """A family's inference operations over a batch of prompts (see evaluation/scoring.py).

  `start(prompts, size, length, extra_length)` runs the padded prompts once and returns
  the state the other calls read (T5: the encoder output; decoders: the prefilled KV
  cache); `score(state, options, option_lengths)` gives (B, O) summed log-likelihoods of
  right-padded options (B, O, T); `decode(state, length, eos_id, vocab_limit)` greedy ids
  (B, length); `score_naive(prompts, options, size, length, target_length)` the (B,) scores
  of (prompt, option) rows each run through the whole model (the recipe `score` replaces).
  """

  def __init__(self, config: ModelConfig, params):
    self.config = config
    self.params = params

  @abc.abstractmethod
  def start(self, prompts: Sequence[Sequence[int]], size: int, length: int,
            extra_length: int): ...

  @abc.abstractmethod
  def score(self, state, options, option_lengths): ...

  @abc.abstractmethod
  def decode(self, state, length: int, eos_id: int, vocab_limit: int): ...

  @abc.abstractmethod
  def score_naive(self, prompts, options, size: int, length: int, target_length: int): ...

  @classmethod
  def compiled_count(cls) -> int:
    """Executables compiled so far by the jitted functions of `jitted()` (benchmarks)."""
    return sum(f._cache_size() for f in cls.jitted())  # pylint: disable=protected-access

  @classmethod
  @abc.abstractmethod
  def jitted(cls) -> tuple: ...


class HFMapping(abc.ABC):
  """A family's side of HuggingFace checkpoints; the files themselves are
  `checkpoints/hf.py`'s (one loader and saver for every family)."""

  model_types: ClassVar[tuple[str, ...]]  # config.json model_type values it reads

  @abc.abstractmethod
  def name_map(self, config) -> list[tuple[str, str]]:
    """(HF tensor name, our param path) pairs, in a stable order."""

  @abc.abstractmethod
  def transposed(self, our_name: str) -> bool:
    """Whether the HF tensor is the transpose of our param `our_name`."""

  @abc.abstractmethod
  def config_from_hf(self, data: dict, source: str, tensors, config=None):
    """Our config from a config.json dict (`tensors`: the checkpoint's tensor source, for
    facts only the weights tell; `config`: a given config whose shapes and run settings
    win). Raises CheckpointError naming `source` on a config it cannot load."""

  @abc.abstractmethod
  def config_to_hf(self, config) -> dict:
    """config.json contents that transformers loads as this model."""

  @abc.abstractmethod
  def generation_config(self, config) -> dict:
    """generation_config.json contents."""

  @abc.abstractmethod
  def describe(self, config) -> str:
    """The model in words, for 'unexpected tensor' errors: 'a 2-layer llama model'."""

  def read_params(self, tensors, config, data: dict, read: Callable) -> dict:
    """{our path: array} of every pair of the name map; `read(hf_name, our_name, hint)`
    reads one tensor in our layout. Families with tied or aliased tensors override it."""
    del data
    return {ours: read(hf_name, ours, "") for hf_name, ours in self.name_map(config)}

  def ignored(self, hf_name: str, config) -> bool:
    """Tensors a checkpoint may hold that the model does not use (buffers, copies)."""
    del hf_name, config
    return False


class ModelFamily(abc.ABC):
  """One architecture: config, module, training forward, features, inference, HF, FLOPs."""

  name: ClassVar[str]  # the folder under models/ ('t5', 'decoder'); benchmarks' --family
  package: ClassVar[str]  # its module path, e.g. 'symbol_tuning.models.t5'
  config_cls: ClassVar[type]
  answer_in_sequence: ClassVar[bool]  # prompt and answer share one sequence: an input
  #   length bounds both (evaluation fits prompt + EOS + answer + EOS to it)
  prefix_lm: ClassVar[bool] = False  # PREFIX_LM (bidirectional attention over the prompt)
  config_in_t5x_shapes: ClassVar[bool] = False  # a t5x checkpoint's shapes tell its whole
  #   config; else model_config.json travels with it (checkpoints/t5x_config.py)

  def file(self, name: str):
    """The family's `name`.py (network, features, inference, hf), imported on first use:
    jax, flax and TensorFlow load only when a family's model or data is needed."""
    return importlib.import_module(f"{self.package}.{name}")

  @property
  def architecture(self) -> str:
    """The tag its configs carry in model_config.json (config.py's ARCHITECTURE)."""
    return self.file("config").ARCHITECTURE

  @property
  def configs(self) -> Mapping[str, Any]:
    """Its named configs (config.py's CONFIGS)."""
    return self.file("config").CONFIGS

  @property
  def hf(self) -> HFMapping:
    return self.file("hf").HF_MAPPING

  @property
  def model_features(self) -> tuple[str, ...]:
    """The features of a training batch the model reads."""
    return self.file("features").MODEL_FEATURES

  # --- construction ------------------------------------------------------------------
  def get_config(self, name: str, **overrides) -> ModelConfig:
    """A named config (config.py's CONFIGS) with `overrides` applied."""
    return self.file("config").get_config(name, **overrides)

  def knows_config(self, name: str) -> bool:
    return name in self.configs

  def config_from_dict(self, data: Mapping[str, Any]) -> ModelConfig:
    return self.config_cls.from_dict(data)

  def module(self, config):
    """The Flax module (its param tree is the t5x-layout tree checkpoints hold)."""
    return self.file("network").MODULE(config)

  def init_inputs(self, config) -> tuple:
    """Positional inputs `module(config).init` traces the parameter shapes with."""
    del config  # parameter shapes do not depend on the lengths
    return self.file("network").init_inputs()

  def init_params(self, config, rng=None) -> dict[str, Any]:
    """Randomly initialised, unboxed float32 params (rng: a key, an int seed or None = 0)."""
    import jax  # pylint: disable=g-import-not-at-top
    if rng is None:
      rng = jax.random.PRNGKey(0)
    elif isinstance(rng, int):
      rng = jax.random.PRNGKey(rng)
    return _init_params(self, config, rng)

  def param_shapes(self, config) -> dict[str, Any]:
    """Tree of jax.ShapeDtypeStruct matching `init_params` (traced, not computed)."""
    from flax import linen as nn  # pylint: disable=g-import-not-at-top
    return _copy_tree(nn.unbox(_boxed_param_shapes(self, config)))

  def get_logical_axes(self, config) -> dict[str, Any]:
    """Tree of PartitionSpec of t5x logical axis names, matching the params tree; map it
    to mesh axes with e.g. `nn.logical_to_mesh(axes, rules)`."""
    from flax import linen as nn  # pylint: disable=g-import-not-at-top
    return _copy_tree(nn.get_partition_spec(_boxed_param_shapes(self, config)))

  # --- training ----------------------------------------------------------------------
  @abc.abstractmethod
  def feature_lengths(self, lengths) -> dict:
    """TASK_FEATURE_LENGTHS (a dict or a single int) as the data pipeline takes them;
    ValueError on lengths this family cannot train with."""

  def feature_converter(self, pack: bool = True, buffer_size: int = 256,
                        best_fit: bool = True):
    """Its seqio FeatureConverter: best-fit packing of `buffer_size` examples when `pack`;
    `best_fit=False` gives the seqio converter it extends (greedy packing; benchmarks)."""
    features = self.file("features")
    if not best_fit:
      return features.SEQIO_CONVERTER(pack=pack)
    return features.CONVERTER(pack=pack, buffer_size=buffer_size)

  @abc.abstractmethod
  def forward(self, module, params, batch: Mapping[str, Any], *, enable_dropout: bool,
              rngs=None, prefix_lm: bool = False):
    """Training logits (batch, length, vocab) of a feature-converted batch; the loss reads
    them against batch['decoder_target_tokens'] / ['decoder_loss_weights']."""

  @abc.abstractmethod
  def batch_counts(self, batch: Mapping[str, Any]) -> tuple[int, int]:
    """(examples, non-padding tokens) of a host batch, packed or not."""

  # --- inference ---------------------------------------------------------------------
  def inference(self, config, params) -> Inference:
    return self.file("inference").INFERENCE(config, params)

  # --- cost ----------------------------------------------------------------------------
  @abc.abstractmethod
  def train_flops(self, config, batch: int, lengths: Mapping[str, int]) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward matmuls) on
    `batch` rows of `lengths` ({'inputs', 'targets'} or {'targets'})."""

  def __repr__(self) -> str:
    return f"<model family {self.name}>"


def _init_variables(family: ModelFamily, config, rng):
  return family.module(config).init({"params": rng, "dropout": rng},
                                    *family.init_inputs(config), enable_dropout=False)


@functools.lru_cache(maxsize=None)
def _init_params_jitted():
  import jax  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def init(family, config, rng):
    return nn.unbox(_init_variables(family, config, rng)["params"])
  return init


def _init_params(family, config, rng):
  return _init_params_jitted()(family, config, rng)


@functools.lru_cache(maxsize=32)
def _boxed_param_shapes(family: ModelFamily, config):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(lambda r: _init_variables(family, config, r)["params"],
                        jax.random.PRNGKey(0))


def _copy_tree(tree):
  return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def zero_cache(module, *inputs, **kwargs) -> dict[str, Any]:
  """The zero 'cache' collection `module.init(..., decode=True)` creates on `inputs`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def make(rng):
    return module.init({"params": rng}, *inputs, enable_dropout=False, decode=True,
                       **kwargs)["cache"]

  shapes = jax.eval_shape(make, jax.random.PRNGKey(0))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def config_fields(config_cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of `config_cls` in a `to_dict` dict; other keys but the architecture tag
  are ignored with a warning (a file from a newer version loads in an older one)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  known = {f.name for f in dataclasses.fields(config_cls)}
  unknown = sorted(set(data) - known - {"architecture"})
  if unknown:
    warnings.warn(f"{config_cls.__name__}.from_dict: ignoring unknown keys {unknown}")
  return {k: v for k, v in data.items() if k in known}


def check_overrides(config_cls: type, overrides: Mapping[str, Any]) -> None:
  """ValueError naming override keys that are not fields of `config_cls`."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  known = {f.name for f in dataclasses.fields(config_cls)}
  bad = sorted(set(overrides) - known)
  if bad:
    raise ValueError(f"unknown {config_cls.__name__} field(s) {bad}; known: {sorted(known)}")

