"""The gin files for t5x's binaries (gin/t5x/).

Static checks read the files as text against what t5x defines (constants below, taken from
t5x's own files). The parse checks run every file through the real t5x (installed by
.ci/install_t5x.sh from ../shared/vendor): tests/t5x_gin_probe.py parses it with t5x's own
gin_utils and calls the configured train()/evaluate() with t5x's real modules, so every
macro, @reference and REQUIRED value is resolved and every model, optimizer, partitioner and
DatasetConfig is built; only the job itself is not run (tests/test_t5x_binaries.py runs it).
"""
import pathlib
import re

import pytest

import t5x_support

GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin" / "t5x"
SIZES = ("small", "base", "large", "xl", "xxl")
EMB_DIM = {"small": 512, "base": 768, "large": 1024, "xl": 2048, "xxl": 4096}
FLAN_T5_STEPS = {"small": 1198000, "base": 1184000, "large": 1164000, "xl": 1138000,
                 "xxl": 1114000}
EVAL_SETTINGS = ("instr_labels", "instr_symbols", "labels", "symbols", "flipped")

# t5x gin files our files include, as checked in google-research/t5x (t5x/configs/runs/ and
# t5x/examples/t5/t5_1_1/). t5x's train/eval binaries put the t5x checkout on the search path.
T5X_GIN_FILES = {
    "t5x/configs/runs/finetune.gin",
    "t5x/configs/runs/eval.gin",
    *(f"t5x/examples/t5/t5_1_1/{size}.gin" for size in SIZES),
}
# Macros t5x's files define, per file (REQUIRED ones marked in comments).
T5X_MACROS = {
    # t5x/configs/runs/finetune.gin; REQUIRED: MODEL_DIR, MIXTURE_OR_TASK_NAME,
    # TASK_FEATURE_LENGTHS, TRAIN_STEPS (counts the checkpoint's steps), INITIAL_CHECKPOINT_PATH
    "finetune.gin": {"MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS",
                     "MIXTURE_OR_TASK_MODULE", "TRAIN_STEPS", "INITIAL_CHECKPOINT_PATH",
                     "DROPOUT_RATE", "USE_CACHED_TASKS", "BATCH_SIZE", "EVAL_STEPS",
                     "EVAL_PERIOD", "EVALUATOR_USE_MEMORY_CACHE", "EVALUATOR_NUM_EXAMPLES",
                     "JSON_WRITE_N_RESULTS", "USE_HARDWARE_RNG", "RANDOM_SEED",
                     "TRAIN_STEPS_RELATIVE"},
    # t5x/configs/runs/eval.gin; REQUIRED: MIXTURE_OR_TASK_NAME, CHECKPOINT_PATH, EVAL_OUTPUT_DIR
    "eval.gin": {"MIXTURE_OR_TASK_NAME", "CHECKPOINT_PATH", "EVAL_OUTPUT_DIR",
                 "TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_MODULE"},
    # t5x/examples/t5/t5_1_1/base.gin (small/large/xl/xxl.gin include it); REQUIRED: DROPOUT_RATE
    "t5_1_1": {"Z_LOSS", "LABEL_SMOOTHING", "LOSS_NORMALIZING_FACTOR", "DROPOUT_RATE",
               "VOCABULARY", "OPTIMIZER", "MODEL"},
}
ALL_T5X_MACROS = set().union(*T5X_MACROS.values())
# t5x modules imported by t5x's own run/model files (so they exist under these names).
T5X_MODULES = {"adafactor", "decoding", "gin_utils", "models", "partitioning", "trainer",
               "utils"}
# Mixtures that may be registered later by others (metrics, algorithmic tasks).
OPTIONAL_MIXTURES = {"symbol_tuning_list_functions", "symbol_tuning_turing_concepts"}


def _gin_files():
  return sorted(GIN_DIR.rglob("*.gin"))


def _code_lines(path):
  """Non-comment lines (our gin files have no '#' inside strings)."""
  return [line.split("#", 1)[0].rstrip() for line in path.read_text().splitlines()]


def _includes(path):
  return [m.group(1) for line in _code_lines(path)
          if (m := re.match(r"include\s+['\"]([^'\"]+)['\"]", line))]


def _macros_set(path):
  return {m.group(1) for line in _code_lines(path)
          if (m := re.match(r"([A-Z][A-Z0-9_]*)\s*=", line))}


def _macros_used(path):
  return {name for line in _code_lines(path) for name in re.findall(r"%([A-Z][A-Z0-9_]*)", line)}


def _closure(path):
  """The file and every file it includes, recursively (t5x's files by name only)."""
  seen, todo = [], [path]
  while todo:
    current = todo.pop()
    seen.append(current)
    for inc in _includes(current):
      if (GIN_DIR / inc).is_file():
        todo.append(GIN_DIR / inc)
      else:
        seen.append(inc)
  return seen


def test_expected_files_exist():
  names = {p.relative_to(GIN_DIR).as_posix() for p in _gin_files()}
  for size in SIZES:
    assert {f"models/flan_t5_{size}.gin", f"symbol_tuning_flan_t5_{size}.gin",
            f"symbol_tuning_eval_flan_t5_{size}.gin"} <= names
  assert {"symbol_tuning.gin", "symbol_tuning_mix.gin", "symbol_tuning_eval.gin"} <= names


@pytest.mark.parametrize("path", _gin_files(), ids=lambda p: p.name)
def test_includes_resolve(path):
  for inc in _includes(path):
    assert (GIN_DIR / inc).is_file() or inc in T5X_GIN_FILES, f"{path.name}: include {inc!r}"


@pytest.mark.parametrize("path", _gin_files(), ids=lambda p: p.name)
def test_header_documents_the_run(path):
  header = path.read_text().split("\n\n", 1)[0]
  assert all(line.startswith("#") for line in header.splitlines()), "header comment first"
  assert "Command line" in header and "--gin_search_paths=gin/t5x" in header
  if not path.parent.name == "models":
    assert "REQUIRED" in header and "Commonly overridden" in header


def test_macros_are_t5x_or_ours():
  """A macro we set either overrides one of t5x's or is used (%NAME) by our files: a
  misspelt override would otherwise be silently ignored."""
  ours_used = set().union(*(_macros_used(p) for p in _gin_files()))
  ours_set = set().union(*(_macros_set(p) for p in _gin_files()))
  for path in _gin_files():
    for name in _macros_set(path):
      assert name in ALL_T5X_MACROS or name in ours_used, f"{path.name}: {name} is unused"
  for name in ours_used:
    assert name in ALL_T5X_MACROS or name in ours_set, f"%{name} is defined nowhere"


@pytest.mark.parametrize("path", _gin_files(), ids=lambda p: p.name)
def test_imports(path):
  lines = _code_lines(path)
  code = "\n".join(lines)
  # gin's dynamic registration is per file: a binding of train_script.* needs the import here.
  if any("train_script." in line for line in lines):
    assert "import __main__ as train_script" in code, path.name
  for module in re.findall(r"^from t5x import (\w+)", code, re.M):
    assert module in T5X_MODULES, f"{path.name}: t5x has no module {module}"
  # Bindings of dotted names (module.fn.param) and @references need dynamic registration.
  if re.search(r"^[a-z_][\w]*(/[\w.]+)?\.[\w.]+\s*[:=]|@", code, re.M):
    assert "from __gin__ import dynamic_registration" in code, path.name
  if path.name.startswith("symbol_tuning"):
    assert "import symbol_tuning.data.tasks" in code, path.name
  assert "optax" not in code  # t5x's Adafactor only (optax's fails in t5x's wrapper)


@pytest.mark.parametrize("size", SIZES)
def test_training_files_set_the_paper_setup(size):
  closure = _closure(GIN_DIR / f"symbol_tuning_flan_t5_{size}.gin")
  t5x_files = [f for f in closure if isinstance(f, str)]
  assert f"t5x/examples/t5/t5_1_1/{size}.gin" in t5x_files
  assert "t5x/configs/runs/finetune.gin" in t5x_files
  ours = set().union(*(_macros_set(f) for f in closure if not isinstance(f, str)))
  required = {"MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS",
              "INITIAL_CHECKPOINT_PATH", "DROPOUT_RATE"}
  assert required <= ours  # MODEL_DIR is the user's, on the command line


# ---------------------------------------------------------------------------------------
# Parsing and finalizing with the real t5x (tests/t5x_gin_probe.py, one subprocess).
# ---------------------------------------------------------------------------------------
LOCAL = ["VOCABULARY_NAME = 'local'"]  # no GCS here; the vocabulary tests cover the default
TRAIN = ["MODEL_DIR = '/tmp/model'"] + LOCAL
EVAL = ["CHECKPOINT_PATH = %FLAN_T5_CHECKPOINT", "EVAL_OUTPUT_DIR = '/tmp/eval'"] + LOCAL
# (partitions, microbatches) per size on chips other than v4's and v6e's 32 GiB
# (gin/t5x/models/flan_t5_<size>.gin's V5E_* / V5P_* macros; the others: 1, None).
TPU_GENERATIONS = {"v5e": {"xl": (4, 4), "xxl": (16, 8)}, "v5p": {"xxl": (2, 2)}}
CASES = {
    **{f"train_{size}": ("train", [f"symbol_tuning_flan_t5_{size}.gin"], TRAIN)
       for size in SIZES},
    **{f"eval_{size}": ("evaluate", [f"symbol_tuning_eval_flan_t5_{size}.gin"], EVAL)
       for size in SIZES},
    "train_tiny": ("train", ["symbol_tuning_bigbench_tiny.gin"], ["MODEL_DIR = '/tmp/m'"]),
    "eval_tiny": ("evaluate", ["symbol_tuning_eval_tiny.gin"],
                  ["CHECKPOINT_PATH = '/tmp/m/checkpoint_300'", "EVAL_OUTPUT_DIR = '/tmp/e'"]),
    "overrides": ("train", ["symbol_tuning_flan_t5_base.gin"], TRAIN + [
        "FINETUNE_STEPS = 2000", "BATCH_SIZE = 64", "NUM_PARTITIONS = 2",
        "MIXTURE_OR_TASK_NAME = 'symbol_tuning_bigbench'"]),
    "plain_train_steps": ("train", ["symbol_tuning_flan_t5_base.gin"],
                          TRAIN + ["TRAIN_STEPS = 1190000"]),
    "converted_checkpoint": ("train", ["symbol_tuning_flan_t5_small.gin"], TRAIN + [
        "FLAN_T5_CHECKPOINT = '/data/flan_t5_small_t5x/checkpoint_0'"]),
    "mix_default": ("train", ["symbol_tuning_flan_t5_small.gin", "symbol_tuning_mix.gin"],
                    TRAIN),
    "mix_bigbench": ("train", ["symbol_tuning_flan_t5_small.gin", "symbol_tuning_mix.gin"],
                     TRAIN + ["SYMBOL_FRACTION = 0.5",
                              "INSTRUCTION_MIXTURE = 'instruction_tuning_bigbench'",
                              "SYMBOL_MIXTURE = 'symbol_tuning_bigbench'"]),
    "train_decoder_only_tiny": ("train", ["symbol_tuning_bigbench_decoder_only_tiny.gin"],
                                ["MODEL_DIR = '/tmp/m'"]),
    "eval_decoder_only_tiny": ("evaluate", ["symbol_tuning_eval_decoder_only_tiny.gin"],
                               ["CHECKPOINT_PATH = '/tmp/m/checkpoint_300'",
                                "EVAL_OUTPUT_DIR = '/tmp/e'"]),
    "offline_default_vocabulary": ("train", ["symbol_tuning_flan_t5_small.gin"],
                                   ["MODEL_DIR = '/tmp/model'"]),
    "no_step_in_checkpoint_name": ("train", ["symbol_tuning_flan_t5_small.gin"], TRAIN + [
        "FLAN_T5_CHECKPOINT = '/data/flan_t5_small'"]),
    # gin/t5x/tpu/<generation>.gin after a Flan-T5 file, as launch/tpu_vm.py passes them.
    **{f"train_{size}_{gen}": ("train", [f"symbol_tuning_flan_t5_{size}.gin", f"tpu/{gen}.gin"],
                               TRAIN) for size in SIZES for gen in TPU_GENERATIONS},
    **{f"eval_{size}_{gen}": ("evaluate", [f"symbol_tuning_eval_flan_t5_{size}.gin",
                                           f"tpu/{gen}.gin"], EVAL)
       for size in ("xl", "xxl") for gen in TPU_GENERATIONS},
    "tpu_override": ("train", ["symbol_tuning_flan_t5_xl.gin", "tpu/v5e.gin"],
                     TRAIN + ["NUM_PARTITIONS = 8"]),
}


@pytest.fixture(scope="module")
def probe():
  """{case name: summary of the configured call, or {'error': ...}}, from one subprocess."""
  t5x_support.require_t5x()
  return t5x_support.probe_gin(CASES)


def _ok(probe, name):
  result = probe[name]
  assert "error" not in result, f"{name}: {result.get('error')}"
  return result


@pytest.mark.parametrize("size", SIZES)
def test_training_file_finalizes_to_the_paper_setup(probe, size):
  args = _ok(probe, f"train_{size}")
  large = size == "xxl"
  assert args["model_dir"] == "/tmp/model"
  # The checkpoint's own step (from its checkpoint_<step> name) + FINETUNE_STEPS.
  assert args["total_steps"] == FLAN_T5_STEPS[size] + (1000 if large else 4000)
  assert args["train"] == {"name": "symbol_tuning", "lengths": {"inputs": 2048, "targets": 512},
                           "split": "train", "batch_size": 32, "pack": True,
                           "use_cached": False, "seed": 0}  # DATASET_SEED
  assert args["train_eval"] is None and args["infer_eval"] is None
  assert args["restore_path"] == (f"gs://t5-data/pretrained_models/t5x/flan_t5_{size}/"
                                  f"checkpoint_{FLAN_T5_STEPS[size]}")
  assert args["save_period"] == 1000
  assert (args["lr_factors"], args["learning_rate"]) == ("constant", 1e-3 if large else 3e-3)
  assert args["num_microbatches"] == {"xl": 2, "xxl": 4}.get(size)
  assert args["num_partitions"] == {"xl": 2, "xxl": 8}.get(size, 1)
  model = args["model"]
  assert model["optimizer"] == "t5x.adafactor.Adafactor"
  assert (model["dropout_rate"], model["emb_dim"]) == (0.05, EMB_DIM[size])
  # t5x builds its feature converter from the model's FEATURE_CONVERTER_CLS: best-fit packing.
  assert model["converter"] == "symbol_tuning.models.t5.features.BestFitEncDecFeatureConverter"
  # The model's vocabulary is the tasks' (VOCABULARY_NAME='local': 8000 pieces).
  assert model["vocabulary_size"] == 8000 and model["same_vocabulary"]


def test_overrides_on_the_command_line(probe):
  args = _ok(probe, "overrides")
  assert args["total_steps"] == FLAN_T5_STEPS["base"] + 2000
  assert args["train"]["batch_size"] == 64
  assert args["train"]["name"] == "symbol_tuning_bigbench"
  assert args["num_partitions"] == 2
  assert _ok(probe, "plain_train_steps")["total_steps"] == 1190000  # a number still wins


def test_converted_checkpoint_trains_finetune_steps_from_its_own_step(probe):
  args = _ok(probe, "converted_checkpoint")
  assert args["restore_path"] == "/data/flan_t5_small_t5x/checkpoint_0"
  assert args["total_steps"] == 4000
  error = probe["no_step_in_checkpoint_name"]["error"]
  assert "does not end in checkpoint_<step>" in error and "TRAIN_STEPS" in error


def test_default_vocabulary_offline_fails_fast_with_what_to_do(probe):
  error = probe["offline_default_vocabulary"]["error"]
  assert error.startswith("VocabularyError") and "storage.googleapis.com" in error
  assert "--vocab local" in error and "VOCABULARY_NAME" in error


def test_tiny_twins_match_the_local_ones(probe):
  train = _ok(probe, "train_tiny")
  assert train["total_steps"] == 300 and train["restore_path"] is None
  assert train["train"]["name"] == "symbol_tuning_bigbench"
  assert train["train"]["lengths"] == {"inputs": 512, "targets": 32}
  assert train["train"]["batch_size"] == 8 and train["save_period"] == 100
  assert (train["model"]["emb_dim"], train["model"]["num_layers"]) == (64, 2)
  assert train["model"]["vocab_size"] == 8064 and train["model"]["vocabulary_size"] == 8000
  evaluate = _ok(probe, "eval_tiny")
  assert evaluate["dataset"]["split"] == "validation"
  assert evaluate["dataset"]["name"] == "symbol_tuning_eval_bigbench_symbols"
  local = (GIN_DIR.parent / "local" / "symbol_tuning_bigbench_tiny.gin").read_text()
  for line in ("TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 32}", "BATCH_SIZE = 8",
               "LEARNING_RATE = 0.003", "DROPOUT_RATE = 0.0", "TRAIN_STEPS = 300"):
    assert line in local  # what the t5x twin was checked against above


@pytest.mark.parametrize("fraction,other,symbol_mixture", [
    (None, None, None),  # the file's defaults: 16% symbol data, instruction_tuning
    (0.5, "instruction_tuning_bigbench", "symbol_tuning_bigbench"),
])
def test_mix_file_registers_the_mixture(probe, fraction, other, symbol_mixture):
  args = _ok(probe, "mix_default" if fraction is None else "mix_bigbench")
  expected = fraction or 0.16
  assert args["train"]["name"] == (f"{symbol_mixture or 'symbol_tuning'}_"
                                   f"{round(expected * 100)}pct_{other or 'instruction_tuning'}")


@pytest.mark.parametrize("size", SIZES)
def test_eval_file_finalizes(probe, size):
  args = _ok(probe, f"eval_{size}")
  ds = args["dataset"]
  assert ds["name"] == "symbol_tuning_eval_symbols"
  # t5x's eval.gin hard-codes split 'test'; our queries are in 'validation'.
  assert (ds["split"], ds["batch_size"], ds["pack"]) == ("validation", 32, False)
  assert ds["lengths"] == {"inputs": 2048, "targets": 128}
  assert args["restore_path"].endswith(f"checkpoint_{FLAN_T5_STEPS[size]}")
  assert args["num_partitions"] == {"xl": 2, "xxl": 8}.get(size, 1)
  assert args["model"]["dropout_rate"] == 0.0


@pytest.mark.parametrize("gen", sorted(TPU_GENERATIONS))
@pytest.mark.parametrize("size", SIZES)
def test_tpu_generation_files_select_that_partitioning(probe, size, gen):
  partitions, microbatches = TPU_GENERATIONS[gen].get(size, (1, None))
  train = _ok(probe, f"train_{size}_{gen}")
  assert (train["num_partitions"], train["num_microbatches"]) == (partitions, microbatches)
  assert train["total_steps"] == _ok(probe, f"train_{size}")["total_steps"]  # nothing else
  if size in ("xl", "xxl"):
    assert _ok(probe, f"eval_{size}_{gen}")["num_partitions"] == partitions
  assert _ok(probe, "tpu_override")["num_partitions"] == 8  # --gin.* bindings still win


def test_eval_header_lists_registered_mixtures():
  import seqio  # pylint: disable=import-outside-toplevel

  import symbol_tuning.data.tasks  # pylint: disable=import-outside-toplevel,unused-import

  header = (GIN_DIR / "symbol_tuning_eval.gin").read_text()
  for stem in ("symbol_tuning_eval", "symbol_tuning_eval_bigbench",
               "symbol_tuning_eval_rank", "symbol_tuning_eval_bigbench_rank"):
    assert f"{stem}_<setting>" in header
    for setting in EVAL_SETTINGS:
      mixture = seqio.get_mixture_or_task(f"{stem}_{setting}")
      assert all("validation" in t.splits for t in mixture.tasks)
  for name in OPTIONAL_MIXTURES:  # registered by others, perhaps later: named, not required
    assert name in header


def test_decoder_only_twins_match_the_local_one(probe):
  """t5x's DecoderOnlyModel on t5x's decoder_only network, fed by our PrefixLM converter
  with the single length (the whole sequence), trained and evaluated like the local
  llama-tiny file."""
  train = _ok(probe, "train_decoder_only_tiny")
  model = train["model"]
  assert model["model_class"] == "DecoderOnlyModel"
  assert model["converter"] == "symbol_tuning.models.decoder.features.BestFitPrefixLMFeatureConverter"
  assert (model["emb_dim"], model["num_layers"], model["dropout_rate"]) == (64, 2, 0.0)
  assert model["vocab_size"] == 8064 and model["vocabulary_size"] == 8000
  assert model["optimizer"] == "t5x.adafactor.Adafactor"
  assert train["total_steps"] == 300 and train["restore_path"] is None
  assert train["train"]["lengths"] == {"targets": 544} and train["train"]["pack"]
  assert train["train"]["name"] == "symbol_tuning_bigbench"
  assert (train["train"]["batch_size"], train["save_period"]) == (8, 100)
  assert (train["lr_factors"], train["learning_rate"]) == ("constant", 0.003)
  evaluate = _ok(probe, "eval_decoder_only_tiny")
  assert evaluate["model"]["model_class"] == "DecoderOnlyModel"
  assert evaluate["dataset"]["lengths"] == {"targets": 544}
  assert evaluate["dataset"]["name"] == "symbol_tuning_eval_bigbench_rank_symbols"
  assert evaluate["dataset"]["split"] == "validation"
  local = (GIN_DIR.parent / "local" / "symbol_tuning_bigbench_llama_tiny.gin").read_text()
  for line in ("TASK_FEATURE_LENGTHS = {'targets': 544}", "BATCH_SIZE = 8",
               "LEARNING_RATE = 0.003", "DROPOUT_RATE = 0.0", "TRAIN_STEPS = 300"):
    assert line in local
