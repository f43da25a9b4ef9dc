"""HuggingFace T5 checkpoints (config.json + safetensors) <-> t5x-layout params.

Reading uses the `safetensors` numpy API (and, for bfloat16 tensors, which
numpy cannot name, a direct read of the documented safetensors layout). Pickled
weights (pytorch_model.bin) are never loaded.

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

import json
import os
import re
import struct
from typing import Any, Optional

import numpy as np

from symbol_tuning.checkpoints import CheckpointError, check_params, flatten, unflatten
from symbol_tuning.model.config import T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                 "flax_model.msgpack")
_SUPPORTED_MODEL_TYPES = ("t5", "mt5")  # mT5 is the same v1.1 architecture
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            # Present (unused) in some old checkpoints.
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")

_ATTN = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
_MLP = ("wi_0", "wi_1", "wo")


def name_map(config: T5Config) -> list[tuple[str, str]]:
  """(HF tensor name, t5x param path) pairs, in a stable order.

  Every 2-D pair except the embedding is transposed between the two
  layouts (see `transposed`); 1-D ones are copied.
  """
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
    pairs.append(("lm_head.weight", "decoder/logits_dense/kernel"))
  return pairs


# -----------------------------------------------------------------------------
# Config.
# -----------------------------------------------------------------------------
def _read_config(path: str) -> dict[str, Any]:
  cfg_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{path}: no {CONFIG_FILE}; not a HuggingFace model directory")
  try:
    with open(cfg_path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{cfg_path}: cannot read JSON ({e})") from e
  if not isinstance(data, dict):
    raise CheckpointError(f"{cfg_path}: expected a JSON object")
  return data


def config_from_hf(data: dict[str, Any], source: str = CONFIG_FILE,
                   logits_via_embedding: bool = False) -> T5Config:
  """T5Config from a HF T5 config.json dict (validated: T5 v1.1, gated-gelu)."""
  model_type = data.get("model_type")
  if model_type not in _SUPPORTED_MODEL_TYPES:
    raise CheckpointError(
        f"{source}: model_type is {model_type!r}; only T5 v1.1 / Flan-T5 "
        f"('t5', gated-gelu) checkpoints are supported")
  ff = data.get("feed_forward_proj", "relu")
  if ff != "gated-gelu":
    raise CheckpointError(
        f"{source}: feed_forward_proj is {ff!r}"
        + (" (T5 v1.0)" if ff == "relu" else "")
        + "; only 'gated-gelu' (T5 v1.1 / Flan-T5) is supported")
  try:
    num_layers = int(data["num_layers"])
    return T5Config(
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
        logits_via_embedding=logits_via_embedding,
    )
  except KeyError as e:
    raise CheckpointError(f"{source}: missing field {e.args[0]!r}") from e
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{source}: invalid value ({e})") from e


def config_to_hf(config: T5Config) -> dict[str, Any]:
  """config.json contents that transformers 4.x and 5.x load as this model."""
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


# -----------------------------------------------------------------------------
# Safetensors reading.
# -----------------------------------------------------------------------------
_RAW_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _read_raw(filename: str, name: str) -> np.ndarray:
  """Reads one tensor from the safetensors layout directly (for bfloat16)."""
  with open(filename, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
    info = header[name]
    dtype = info["dtype"]
    if dtype not in _RAW_DTYPES:
      raise CheckpointError(f"{filename}: tensor '{name}' has unsupported dtype {dtype}")
    start, end = info["data_offsets"]
    f.seek(8 + header_len + start)
    arr = np.frombuffer(f.read(end - start), dtype=np.dtype(_RAW_DTYPES[dtype]).newbyteorder("<"))
  if dtype == "BF16":  # bfloat16 = upper 16 bits of a float32
    arr = (arr.astype(np.uint32) << 16).view(np.float32)
  return arr.reshape(info["shape"]).astype(np.float32)


class _TensorSource:
  """Lazy access to the tensors of one HF model directory (single or sharded)."""

  def __init__(self, path: str):
    self.path = path
    single = os.path.join(path, WEIGHTS_FILE)
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
      files = [single]
      self._where = None
    elif os.path.isfile(index):
      try:
        with open(index, encoding="utf-8") as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: cannot read 'weight_map' ({e})") from e
      self._where = {k: os.path.join(path, v) for k, v in weight_map.items()}
      files = sorted(set(self._where.values()))
      for fn in files:
        if not os.path.isfile(fn):
          raise CheckpointError(f"{index}: shard {os.path.basename(fn)} is missing")
    else:
      pickled = [p for p in _PICKLE_FILES if os.path.exists(os.path.join(path, p))]
      if pickled:
        raise CheckpointError(
            f"{path}: only {pickled[0]} found; pickled/framework weights are not "
            f"loaded: convert the model to safetensors ({WEIGHTS_FILE}) first, e.g. "
            f"with transformers `model.save_pretrained(dir, safe_serialization=True)`")
      raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE} found")
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    self._handles = {}
    self._keys: dict[str, str] = {}
    for fn in files:
      try:
        handle = safe_open(fn, framework="np")
      except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{fn}: not a readable safetensors file ({e})") from e
      self._handles[fn] = handle
      for key in handle.keys():
        self._keys[key] = fn

  def keys(self) -> set[str]:
    return set(self._keys)

  def __contains__(self, name: str) -> bool:
    return name in self._keys

  def file_of(self, name: str) -> str:
    return self._keys.get(name) or (self._where or {}).get(name) or os.path.join(
        self.path, WEIGHTS_FILE)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handles[self._keys[name]].get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    fn = self._keys[name]
    try:
      arr = self._handles[fn].get_tensor(name)
    except TypeError:  # bfloat16: numpy has no name for it
      return _read_raw(fn, name)
    return np.asarray(arr, dtype=np.float32)


def transposed(our_name: str) -> bool:
  """Whether the HF tensor is the transpose of our param `our_name`."""
  return our_name != "token_embedder/embedding" and not our_name.endswith("/scale")


# Shared with hf_decoder: the file-level steps of both loaders and savers.
def read_tensor(source: _TensorSource, name: str, our_shape, transpose: bool,
                hint: str = "") -> np.ndarray:
  """Tensor `name` in our layout, checked against our param shape `our_shape` (a missing
  or misshapen tensor raises CheckpointError naming it and its file; `hint` follows a
  'missing' message)."""
  want = tuple(our_shape)
  want = want[::-1] if transpose else want
  if name not in source:
    raise CheckpointError(
        f"{source.file_of(name)}: tensor '{name}' is missing (expected shape {want}){hint}")
  got = source.shape(name)
  if got != want:
    raise CheckpointError(
        f"{source.file_of(name)}: tensor '{name}' has shape {got}, expected {want}")
  arr = source.get(name)
  return np.ascontiguousarray(arr.T) if transpose else arr


def finish_load(source: _TensorSource, flat: dict[str, np.ndarray], unexpected,
                model: str, config, path: str) -> dict:
  """The params tree of `flat`, checked against `config`; a tensor of `unexpected` (the
  first, sorted) raises CheckpointError as not part of `model`."""
  if unexpected:
    first = sorted(unexpected)[0]
    raise CheckpointError(
        f"{source.file_of(first)}: unexpected tensor '{first}' (not part of {model})")
  params = unflatten(flat)
  check_params(config, params, path)
  return params


def hf_tensors(config, params, pairs, transposed_fn) -> dict[str, np.ndarray]:
  """{HF name: float32 tensor} of checked params, by (HF name, our path) `pairs`."""
  check_params(config, params, "save_hf")
  flat = flatten(params)
  tensors = {}
  for hf_name, ours in pairs:
    arr = np.asarray(flat[ours], dtype=np.float32)
    tensors[hf_name] = np.ascontiguousarray(arr.T) if transposed_fn(ours) else arr
  return tensors


def write_model_dir(path: str, config_json: dict[str, Any], generation: dict[str, Any],
                    tensors: dict[str, np.ndarray], max_shard_bytes: int) -> None:
  """config.json, generation_config.json and the safetensors of a HF model directory."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(config_json, f, indent=2, sort_keys=True)
  with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump(generation, f, indent=2)
  write_safetensors(tensors, path, max_shard_bytes)


def load_hf(path: str, config: Optional[T5Config] = None) -> tuple[T5Config, dict]:
  """Loads a HF T5 v1.1 / Flan-T5 directory as (T5Config, float32 numpy params).

  `config`, if given, is checked against the checkpoint (a tensor that does
  not fit it raises CheckpointError naming the tensor); its dropout_rate,
  dtype, etc. are kept.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a directory")
  data = _read_config(path)
  cfg_file = os.path.join(path, CONFIG_FILE)
  hf_config = config_from_hf(data, cfg_file)  # validates before touching weights
  source = _TensorSource(path)

  if "shared.weight" not in source and "encoder.embed_tokens.weight" in source:
    shared_name = "encoder.embed_tokens.weight"
  else:
    shared_name = "shared.weight"
  scale = data.get("scale_decoder_outputs", data.get("tie_word_embeddings", True))
  # transformers >= 5 writes tie_word_embeddings=true even for untied models;
  # the head is untied whenever lm_head.weight is stored and differs.
  untied = "lm_head.weight" in source and (
      data.get("tie_word_embeddings") is False
      or shared_name not in source
      or source.shape("lm_head.weight") != source.shape(shared_name)
      or not np.array_equal(source.get("lm_head.weight"), source.get(shared_name)))
  if "lm_head.weight" not in source and data.get("tie_word_embeddings") is False:
    raise CheckpointError(
        f"{source.file_of('lm_head.weight')}: tensor 'lm_head.weight' is missing "
        f"(config.json has tie_word_embeddings=false)")
  via_embedding = bool(scale) and not untied
  hf_config = config_from_hf(data, cfg_file, logits_via_embedding=via_embedding)
  if config is not None:
    # The given config decides the expected shapes (so a mismatch names the
    # tensor); numerics the file knows better are taken from it.
    hf_config = config.replace(
        logits_via_embedding=via_embedding,
        relative_attention_max_distance=hf_config.relative_attention_max_distance,
        layer_norm_epsilon=hf_config.layer_norm_epsilon)

  from symbol_tuning.model.network import param_shapes  # pylint: disable=g-import-not-at-top
  expected = flatten(param_shapes(hf_config))
  flat: dict[str, np.ndarray] = {}
  for hf_name, ours in name_map(hf_config):
    if hf_name == "lm_head.weight" and not untied:
      continue  # tied: filled from the shared embedding below
    name = shared_name if hf_name == "shared.weight" else hf_name
    flat[ours] = read_tensor(source, name, expected[ours].shape, transposed(ours))

  if not untied and not via_embedding:
    # Tied but unscaled: logits = y @ shared^T; keep it as an untied head.
    flat["decoder/logits_dense/kernel"] = np.ascontiguousarray(source.get(shared_name).T)
  elif untied and scale:
    # Untied but scaled: fold d_model**-0.5 into the head.
    flat["decoder/logits_dense/kernel"] = (
        flat["decoder/logits_dense/kernel"] * np.float32(hf_config.d_model ** -0.5))

  known = {n for n, _ in name_map(hf_config)} | set(_IGNORED) | {shared_name}
  model = (f"a {hf_config.num_encoder_layers}+{hf_config.num_decoder_layers}-layer "
           f"T5 v1.1 model")
  unexpected = source.keys() - known - {"lm_head.weight"}
  return hf_config, finish_load(source, flat, unexpected, model, hf_config, path)


def save_hf(config: T5Config, params, path: str,
            max_shard_bytes: int = 5 * 1024 ** 3) -> None:
  """Writes config.json + model.safetensors (sharded with an index past
  `max_shard_bytes`) that transformers' T5ForConditionalGeneration loads."""
  path = os.fspath(path)
  tensors = hf_tensors(config, params, name_map(config), transposed)
  write_model_dir(path, config_to_hf(config),
                  {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0},
                  tensors, max_shard_bytes)


def write_safetensors(tensors: dict[str, np.ndarray], path: str,
                      max_shard_bytes: int = 5 * 1024 ** 3) -> None:
  """Writes `tensors` as model.safetensors, or as model-0000i-of-0000n.safetensors
  shards plus model.safetensors.index.json past `max_shard_bytes`; stale weight
  files of an earlier save in `path` are removed first."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  meta = {"format": "pt"}
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, arr in tensors.items():
    if shards[-1] and size + arr.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += arr.nbytes
  for stale in os.listdir(path):
    if stale in (WEIGHTS_FILE, INDEX_FILE) or re.fullmatch(
        r"model-\d+-of-\d+\.safetensors", stale):
      os.remove(os.path.join(path, stale))
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, WEIGHTS_FILE), metadata=meta)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, fname), metadata=meta)
    weight_map.update({name: fname for name in shard})
  total = sum(a.nbytes for a in tensors.values())
  with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


__all__ = ["load_hf", "save_hf", "name_map", "config_from_hf", "config_to_hf"]
