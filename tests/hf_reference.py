"""Runs HuggingFace transformers / torch reference code in a fresh Python process.

Test processes have TensorFlow loaded (seqio imports it), and TensorFlow plus torch's PyPI
build (CUDA, with triton) in one process kill Python with a segmentation fault:
`python -c "import tensorflow; import torch._dynamo"` reproduces it, and transformers
imports torch._dynamo. So no test imports torch or transformers. A test calls

    out = hf_reference.run("hf_reference:t5_logits", {"x/input_ids": ids, ...}, models=[...])

which starts `sys.executable` on this file; the child imports the named module (from
tests/, e.g. this one), calls `function(arrays, **options)` and returns its dict of arrays.
Arrays travel as safetensors files and options as JSON: nothing is pickled. A function that
runs in the child takes `(arrays: dict[str, np.ndarray], **options)` and returns a
`dict[str, np.ndarray]`; its module must not import TensorFlow, seqio or symbol_tuning (the
child checks that TensorFlow is not loaded when it is done).

Without torch or transformers installed, `run` skips the calling test (fails it under CI).
"""
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

def require_torch():
  """Skips the calling test when torch or transformers is missing (a failure under CI=true)."""
  missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
  if missing:
    import pytest  # pylint: disable=g-import-not-at-top
    message = f"{' and '.join(missing)} not installed (pip install -e '.[test]')"
    if os.environ.get("CI") == "true":
      pytest.fail(message)
    pytest.skip(message)


def run(function: str, arrays: dict[str, np.ndarray] | None = None, timeout: float = 600,
        **options) -> dict[str, np.ndarray]:
  """Calls `function` ("module:name", module in tests/) in a fresh torch-only process.

  Example: `run("hf_reference:t5_logits", {"m/input_ids": ids, ...}, models=[{"name": "m",
  "path": "/tmp/hf"}])` -> `{"m/logits": array of shape (batch, length, vocab)}`.
  """
  require_torch()
  with tempfile.TemporaryDirectory(prefix="hf_reference.") as tmp:
    tmp = pathlib.Path(tmp)
    save_file({k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()},
              str(tmp / "in.safetensors"))
    (tmp / "options.json").write_text(json.dumps(options))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), function,
                           str(tmp)], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"{function} failed in its torch process (exit code "
                         f"{proc.returncode}):\n{proc.stderr[-4000:]}")
    return load_file(str(tmp / "out.safetensors"))


def _child_main(function: str, folder: str):
  """The child process: loads inputs, calls the function, writes outputs."""
  folder = pathlib.Path(folder)
  module_name, name = function.split(":")
  fn = getattr(importlib.import_module(module_name), name)
  out = fn(load_file(str(folder / "in.safetensors")),
           **json.loads((folder / "options.json").read_text()))
  if "tensorflow" in sys.modules:
    raise RuntimeError(f"{function} imported TensorFlow: a torch process must not load it")
  save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
            str(folder / "out.safetensors"))


# -----------------------------------------------------------------------------
# T5 references (run in the child only: they import torch and transformers).
# -----------------------------------------------------------------------------
def _logits(model, arrays, name):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return model(input_ids=torch.tensor(arrays[f"{name}/input_ids"]),
                 attention_mask=torch.tensor(arrays[f"{name}/attention_mask"]),
                 decoder_input_ids=torch.tensor(arrays[f"{name}/decoder_input_ids"])
                 ).logits.float().numpy()


def _random_t5(config: dict, tied: bool, seed: int):
  """A random HF T5 with non-trivial layer norms; untied lm_head unless `tied`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(
      transformers.T5Config(**config, tie_word_embeddings=tied)).eval()
  with torch.no_grad():
    for param_name, p in model.named_parameters():
      if "layer_norm" in param_name:
        p.add_(0.1 * torch.randn_like(p))
  if not tied:
    # transformers 5 ties T5 heads regardless of the config (see NOTES.md).
    model.lm_head.weight = torch.nn.Parameter(torch.randn(config["vocab_size"],
                                                          config["d_model"]))
    getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
  return model


def t5_random(arrays, models):
  """Builds random HF T5 models, saves each (safetensors) and returns its logits.

  models: [{"name", "path", "config" (T5Config kwargs), "tied", "seed"}, optionally
  "bfloat16_path" (also saved in bfloat16 there)]; arrays: "<name>/input_ids",
  "<name>/attention_mask", "<name>/decoder_input_ids". Returns {"<name>/logits": ...}.
  """
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  for spec in models:
    model = _random_t5(spec["config"], spec["tied"], spec["seed"])
    model.save_pretrained(spec["path"])
    out[f"{spec['name']}/logits"] = _logits(model, arrays, spec["name"])
    if spec.get("bfloat16_path"):
      model.to(torch.bfloat16).save_pretrained(spec["bfloat16_path"])
  return out


def t5_logits(arrays, models):
  """Loads each saved model (`from_pretrained(path)`) and returns its logits.

  models: [{"name", "path"}]; arrays and result as in `t5_random`.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  return {f"{spec['name']}/logits": _logits(
      transformers.T5ForConditionalGeneration.from_pretrained(spec["path"]).eval(), arrays,
      spec["name"]) for spec in models}


# -----------------------------------------------------------------------------
# Decoder-only references (Llama, Qwen2, Qwen3, Gemma).
# -----------------------------------------------------------------------------
def decoder_logits(arrays, jobs):
  """Causal-LM logits of `arrays["tokens"]` for each job; returns {name: logits}.

  jobs: [{"name", "dir"}] loads a saved model; with also "model_type", "config"
  (AutoConfig kwargs) and optionally "shard", it first makes a random model with weights
  far from their init (norms, biases, all of it) and saves it to "dir" (sharded into small
  files if "shard"). Optional arrays: "positions" (position_ids, like "tokens"),
  "long_positions" (a second pass at these position_ids, returned as "<name>/long"), and
  "<name>/inv_freq", a RoPE table that job runs with in place of its own.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tokens = torch.tensor(arrays["tokens"].astype(np.int64))
  positions = ({"position_ids": torch.tensor(arrays["positions"].astype(np.int64))}
               if "positions" in arrays else {})
  out = {}
  for job in jobs:
    if "config" in job:
      torch.manual_seed(0)
      config = transformers.AutoConfig.for_model(job["model_type"], **job["config"])
      model = transformers.AutoModelForCausalLM.from_config(config)
      with torch.no_grad():
        for p in model.parameters():
          if p.ndim == 1:
            p.add_(0.2 * torch.randn_like(p))
          else:
            p.normal_(0.0, 0.2)
      model.save_pretrained(job["dir"], **({"max_shard_size": "40KB"} if job.get("shard")
                                           else {}))
    model = transformers.AutoModelForCausalLM.from_pretrained(job["dir"]).eval()
    with torch.no_grad():
      if f"{job['name']}/inv_freq" in arrays:  # a given RoPE table in place of HF's own
        model.model.rotary_emb.inv_freq.copy_(torch.tensor(arrays[f"{job['name']}/inv_freq"]))
      out[job["name"]] = model(input_ids=tokens, **positions).logits.float().numpy()
      if "long_positions" in arrays:
        out[f"{job['name']}/long"] = model(
            input_ids=tokens, position_ids=torch.tensor(
                arrays["long_positions"].astype(np.int64))).logits.float().numpy()
  return out


def rope_tables(arrays, cases, jobs=()):
  """transformers' RoPE for each case: {"<name>/inv_freq", "<name>/cos", "<name>/sin"}.

  cases: [{"name", "model_type", "config" (AutoConfig kwargs with head_dim and
  rope_parameters)}]; arrays["table_positions"] (1, n) int: the positions of the cos/sin
  rows. `jobs` also run `decoder_logits` in the same process (one torch start-up).
  inv_freq comes from transformers' init function for the rope type (the default one is
  the family's own `compute_default_rope_parameters`); cos/sin from the family's
  `*RotaryEmbedding.forward`. "simd_lanes": the float32 lanes of torch's CPU kernels here
  (its pow runs SLEEF on whole vectors, libm on the rest: see symbol_tuning/models/rope.py).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers import modeling_rope_utils  # pylint: disable=g-import-not-at-top
  positions = torch.tensor(arrays["table_positions"].astype(np.int64))
  capability = torch.backends.cpu.get_cpu_capability()
  arm = platform.machine().lower() in ("aarch64", "arm64")
  lanes = {"AVX512": 16, "AVX2": 8, "SVE256": 8}.get(capability, 4 if arm else 1)
  out = {"simd_lanes": np.array([lanes], np.int32)}
  for case in cases:
    config = transformers.AutoConfig.for_model(case["model_type"], **case["config"])
    module = importlib.import_module(f"transformers.models.{case['model_type']}.modeling_"
                               f"{case['model_type']}")
    rotary_cls = next(getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding"))
    rope_type = config.rope_parameters["rope_type"]
    init_fn = (rotary_cls.compute_default_rope_parameters if rope_type == "default"
               else modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type])
    out[f"{case['name']}/inv_freq"] = init_fn(config)[0].numpy()
    cos, sin = rotary_cls(config)(torch.zeros(1, dtype=torch.float32), positions)
    out[f"{case['name']}/cos"], out[f"{case['name']}/sin"] = cos.numpy(), sin.numpy()
  return {**out, **(decoder_logits(arrays, jobs) if jobs else {})}


if __name__ == "__main__":
  _child_main(*sys.argv[1:])
