"""The gin files for t5x's binaries (gin/t5x/), checked without t5x (it is not installable
here; users install it from git on their TPU VMs).

Static checks read the files as text against what t5x defines (constants below, taken from
t5x's own files). The parse checks run gin 0.5.0 on the real files against stand-ins: a
stub `t5x` package whose configurables take exactly the parameters we bind, and stub run /
model gin files that define t5x's macros and bind the arguments of train() / evaluate().
Calling the configured stand-in then resolves every macro, reference and REQUIRED value.
"""
import pathlib
import re
import sys
import textwrap

import gin
import pytest

from symbol_tuning import packing

GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin" / "t5x"
SIZES = ("small", "base", "large", "xl", "xxl")
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
                     "JSON_WRITE_N_RESULTS", "USE_HARDWARE_RNG", "RANDOM_SEED"},
    # t5x/configs/runs/eval.gin; REQUIRED: MIXTURE_OR_TASK_NAME, CHECKPOINT_PATH, EVAL_OUTPUT_DIR
    "eval.gin": {"MIXTURE_OR_TASK_NAME", "CHECKPOINT_PATH", "EVAL_OUTPUT_DIR",
                 "TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_MODULE", "MIXTURE_OR_TASK_SPLIT"},
    # t5x/examples/t5/t5_1_1/base.gin (small/large/xl/xxl.gin include it); REQUIRED: DROPOUT_RATE
    "t5_1_1": {"Z_LOSS", "LABEL_SMOOTHING", "LOSS_NORMALIZING_FACTOR", "DROPOUT_RATE",
               "VOCABULARY", "OPTIMIZER", "MODEL"},
}
ALL_T5X_MACROS = set().union(*T5X_MACROS.values())
# t5x modules imported by t5x's own run/model files (so they exist under these names).
T5X_MODULES = {"adafactor", "gin_utils", "models", "partitioning", "trainer", "utils"}
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
    assert "import symbol_tuning.tasks" in code, path.name
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
# Parsing with gin against stand-ins for t5x.
# ---------------------------------------------------------------------------------------

# The stub t5x package: the configurables our files and t5x's files bind, with the
# parameters t5x gives them (t5x/utils.py, partitioning.py, trainer.py, adafactor.py,
# gin_utils.py); gin rejects a binding to any other parameter.
STUB_MODULES = {
    "__init__.py": "",
    "adafactor.py": """
        class Adafactor:
          def __init__(self, decay_rate=None, step_offset=0, logical_factor_rules=None):
            self.decay_rate, self.step_offset = decay_rate, step_offset
        def standard_logical_factor_rules():
          return {}
        """,
    "gin_utils.py": """
        def sum_fn(var1=None, var2=None):
          return var1 + var2
        """,
    "models.py": """
        class EncoderDecoderModel:
          def __init__(self, module=None, input_vocabulary=None, output_vocabulary=None,
                       optimizer_def=None, z_loss=None, label_smoothing=None,
                       loss_normalizing_factor=None, feature_converter_cls=None):
            self.module, self.optimizer_def = module, optimizer_def
            self.feature_converter_cls = feature_converter_cls
        """,
    "partitioning.py": """
        class PjitPartitioner:
          def __init__(self, num_partitions=None, model_parallel_submesh=None,
                       logical_axis_rules=None):
            self.num_partitions = num_partitions
        def standard_logical_axis_rules():
          return ()
        """,
    "trainer.py": """
        class Trainer:
          def __init__(self, num_microbatches=None, learning_rate_fn=None):
            self.num_microbatches, self.learning_rate_fn = num_microbatches, learning_rate_fn
        """,
    "utils.py": """
        import dataclasses
        @dataclasses.dataclass
        class DatasetConfig:
          mixture_or_task_name: object = None
          task_feature_lengths: object = None
          split: str = None
          batch_size: int = None
          shuffle: bool = None
          seed: object = None
          use_cached: bool = False
          pack: bool = False
          module: object = None
        @dataclasses.dataclass
        class SaveCheckpointConfig:
          period: int = None
          dtype: str = 'float32'
        @dataclasses.dataclass
        class RestoreCheckpointConfig:
          path: object
          mode: str = 'latest'
        @dataclasses.dataclass
        class CheckpointConfig:
          save: object = None
          restore: object = None
        def create_learning_rate_scheduler(factors='constant', base_learning_rate=0.1,
                                           warmup_steps=0):
          return {'factors': factors, 'base_learning_rate': base_learning_rate}
        """,
    "examples/__init__.py": "",
    "examples/t5/__init__.py": "",
    "examples/t5/network.py": """
        class T5Config:
          def __init__(self, emb_dim=None, num_heads=None, dropout_rate=None):
            self.emb_dim, self.dropout_rate = emb_dim, dropout_rate
        class Transformer:
          def __init__(self, config=None):
            self.config = config
        """,
}

# Stand-ins for t5x's gin files: the same macros (REQUIRED where t5x requires them) and the
# bindings of train()/evaluate() arguments our files interact with.
STUB_FINETUNE = """
    from __gin__ import dynamic_registration
    import __main__ as train_script
    from t5x import partitioning
    from t5x import trainer
    from t5x import utils
    MODEL_DIR = %gin.REQUIRED
    MIXTURE_OR_TASK_NAME = %gin.REQUIRED
    TASK_FEATURE_LENGTHS = %gin.REQUIRED
    TRAIN_STEPS = %gin.REQUIRED
    INITIAL_CHECKPOINT_PATH = %gin.REQUIRED
    MIXTURE_OR_TASK_MODULE = None
    DROPOUT_RATE = 0.1
    USE_CACHED_TASKS = True
    BATCH_SIZE = 128
    train_script.train:
      model = %MODEL
      model_dir = %MODEL_DIR
      train_dataset_cfg = @train/utils.DatasetConfig()
      train_eval_dataset_cfg = @train_eval/utils.DatasetConfig()
      infer_eval_dataset_cfg = @infer_eval/utils.DatasetConfig()
      checkpoint_cfg = @utils.CheckpointConfig()
      partitioner = @partitioning.PjitPartitioner()
      trainer_cls = @trainer.Trainer
      total_steps = %TRAIN_STEPS
    partitioning.PjitPartitioner:
      num_partitions = 1
      model_parallel_submesh = None
    train/utils.DatasetConfig:
      mixture_or_task_name = %MIXTURE_OR_TASK_NAME
      task_feature_lengths = %TASK_FEATURE_LENGTHS
      split = 'train'
      batch_size = %BATCH_SIZE
      use_cached = %USE_CACHED_TASKS
      pack = True
      module = %MIXTURE_OR_TASK_MODULE
    train_eval/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
    infer_eval/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
    utils.CheckpointConfig:
      restore = @utils.RestoreCheckpointConfig()
      save = @utils.SaveCheckpointConfig()
    utils.RestoreCheckpointConfig:
      path = %INITIAL_CHECKPOINT_PATH
      mode = 'specific'
    utils.SaveCheckpointConfig.period = 5000
    trainer.Trainer:
      num_microbatches = None
      learning_rate_fn = @utils.create_learning_rate_scheduler()
    utils.create_learning_rate_scheduler:
      factors = 'constant'
      base_learning_rate = 0.001
      warmup_steps = 1000
    """
STUB_EVAL = """
    from __gin__ import dynamic_registration
    import __main__ as eval_script
    from t5x import partitioning
    from t5x import utils
    MIXTURE_OR_TASK_NAME = %gin.REQUIRED
    CHECKPOINT_PATH = %gin.REQUIRED
    EVAL_OUTPUT_DIR = %gin.REQUIRED
    TASK_FEATURE_LENGTHS = None
    MIXTURE_OR_TASK_MODULE = None
    MIXTURE_OR_TASK_SPLIT = 'test'
    eval_script.evaluate:
      model = %MODEL
      dataset_cfg = @utils.DatasetConfig()
      partitioner = @partitioning.PjitPartitioner()
      restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
      output_dir = %EVAL_OUTPUT_DIR
    partitioning.PjitPartitioner.num_partitions = 1
    utils.DatasetConfig:
      mixture_or_task_name = %MIXTURE_OR_TASK_NAME
      task_feature_lengths = %TASK_FEATURE_LENGTHS
      split = %MIXTURE_OR_TASK_SPLIT
      batch_size = 32
      module = %MIXTURE_OR_TASK_MODULE
    utils.RestoreCheckpointConfig:
      path = %CHECKPOINT_PATH
      mode = 'specific'
    """
STUB_T5_1_1_BASE = """
    from __gin__ import dynamic_registration
    from t5x import adafactor
    from t5x import models
    from t5x.examples.t5 import network
    DROPOUT_RATE = %gin.REQUIRED
    OPTIMIZER = @adafactor.Adafactor()
    adafactor.Adafactor:
      decay_rate = 0.8
      step_offset = 0
    MODEL = @models.EncoderDecoderModel()
    models.EncoderDecoderModel:
      module = @network.Transformer()
      optimizer_def = %OPTIMIZER
    network.Transformer.config = @network.T5Config()
    network.T5Config:
      emb_dim = 768
      dropout_rate = %DROPOUT_RATE
    """
STUB_T5_1_1_SIZE = """
    from __gin__ import dynamic_registration
    from t5x.examples.t5 import network
    include 't5x/examples/t5/t5_1_1/base.gin'
    network.T5Config.emb_dim = {emb_dim}
    """
EMB_DIM = {"small": 512, "base": 768, "large": 1024, "xl": 2048, "xxl": 4096}


def _fake_train(**kwargs):  # train_script.train: returns its arguments
  return kwargs


def _fake_evaluate(**kwargs):  # eval_script.evaluate
  return kwargs


@pytest.fixture(scope="module")
def stub_t5x(tmp_path_factory):
  """A root holding the stub `t5x` package and t5x's gin layout, on sys.path."""
  root = tmp_path_factory.mktemp("t5x_stub")
  files = {f"t5x/{name}": text for name, text in STUB_MODULES.items()}
  # Gin-file folders are packages in t5x (gin's resource reader imports the folder of an
  # include path as a package and fails on a namespace package).
  files["t5x/configs/__init__.py"] = files["t5x/configs/runs/__init__.py"] = ""
  files["t5x/examples/t5/t5_1_1/__init__.py"] = ""
  files["t5x/configs/runs/finetune.gin"] = STUB_FINETUNE
  files["t5x/configs/runs/eval.gin"] = STUB_EVAL
  files["t5x/examples/t5/t5_1_1/base.gin"] = STUB_T5_1_1_BASE
  for size in SIZES:
    if size != "base":
      files[f"t5x/examples/t5/t5_1_1/{size}.gin"] = STUB_T5_1_1_SIZE.format(
          emb_dim=EMB_DIM[size])
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(textwrap.dedent(text))
  assert (root / "t5x/configs/runs/finetune.gin").relative_to(root).as_posix() in T5X_GIN_FILES
  sys.path.insert(0, str(root))
  yield root
  sys.path.remove(str(root))
  for name in [m for m in sys.modules if m == "t5x" or m.startswith("t5x.")]:
    del sys.modules[name]


@pytest.fixture
def parse(stub_t5x, monkeypatch):
  """parse(files, bindings) -> the configured stand-in of train() or evaluate(), called."""
  import __main__  # pylint: disable=import-outside-toplevel
  import symbol_tuning.tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  monkeypatch.setattr(__main__, "train", _fake_train, raising=False)
  monkeypatch.setattr(__main__, "evaluate", _fake_evaluate, raising=False)
  search_paths = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  saved = list(search_paths)
  gin.clear_config()
  # As t5x's binaries do: gin's own '' first, then ours, then the t5x checkout. Set, not
  # appended: another test may have left a search path holding same-named files (gin/local/).
  search_paths[:] = ["", str(GIN_DIR), str(stub_t5x)]

  def run(files, bindings=(), fn="train"):
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)
    # gin registered the function it found at __main__.<fn> while parsing; call that.
    return gin.get_configurable({"train": _fake_train, "evaluate": _fake_evaluate}[fn])()

  yield run
  gin.clear_config()
  search_paths[:] = saved


@pytest.mark.parametrize("size", SIZES)
def test_training_file_parses_to_the_paper_setup(parse, size):
  args = parse([f"symbol_tuning_flan_t5_{size}.gin"], ["MODEL_DIR = '/tmp/model'"])
  large = size == "xxl"
  assert args["model_dir"] == "/tmp/model"
  assert args["total_steps"] == FLAN_T5_STEPS[size] + (1000 if large else 4000)
  ds = args["train_dataset_cfg"]
  assert ds.mixture_or_task_name == "symbol_tuning"
  assert ds.task_feature_lengths == {"inputs": 2048, "targets": 512}
  assert (ds.batch_size, ds.use_cached, ds.pack, ds.split) == (32, False, True, "train")
  assert args["train_eval_dataset_cfg"] is None and args["infer_eval_dataset_cfg"] is None
  restore = args["checkpoint_cfg"].restore
  assert restore.path == (f"gs://t5-data/pretrained_models/t5x/flan_t5_{size}/"
                          f"checkpoint_{FLAN_T5_STEPS[size]}")
  assert args["checkpoint_cfg"].save.period == 1000
  trainer = args["trainer_cls"]()
  assert trainer.learning_rate_fn == {"factors": "constant",
                                      "base_learning_rate": 1e-3 if large else 3e-3}
  assert trainer.num_microbatches == {"xl": 2, "xxl": 4}.get(size)
  assert args["partitioner"].num_partitions == {"xl": 2, "xxl": 8}.get(size, 1)
  model = args["model"]
  assert type(model.optimizer_def).__module__ == "t5x.adafactor"
  assert model.module.config.dropout_rate == 0.05
  assert model.module.config.emb_dim == EMB_DIM[size]
  # Best-fit packing, called the way t5x's train binary calls FEATURE_CONVERTER_CLS.
  converter = model.feature_converter_cls(pack=True, use_custom_packing_ops=False)
  assert isinstance(converter, packing.BestFitEncDecFeatureConverter) and converter.pack


def test_overrides_on_the_command_line(parse):
  args = parse(["symbol_tuning_flan_t5_base.gin"],
               ["MODEL_DIR = 'gs://b/run 1'", "FINETUNE_STEPS = 2000", "BATCH_SIZE = 64",
                "MIXTURE_OR_TASK_NAME = 'symbol_tuning_bigbench'", "NUM_PARTITIONS = 2"])
  assert args["total_steps"] == FLAN_T5_STEPS["base"] + 2000
  assert args["train_dataset_cfg"].batch_size == 64
  assert args["train_dataset_cfg"].mixture_or_task_name == "symbol_tuning_bigbench"
  assert args["partitioner"].num_partitions == 2
  # A plain number still replaces the computed TRAIN_STEPS.
  assert parse([], ["TRAIN_STEPS = 1190000"])["total_steps"] == 1190000


@pytest.mark.parametrize("fraction,other,symbol_mixture", [
    (None, None, None),  # the file's defaults: 16% symbol data, instruction_tuning
    (0.5, "instruction_tuning_bigbench", "symbol_tuning_bigbench"),
])
def test_mix_file_registers_the_mixture(parse, fraction, other, symbol_mixture):
  import seqio  # pylint: disable=import-outside-toplevel

  bindings = ["MODEL_DIR = '/tmp/m'"]
  if fraction is not None:
    bindings += [f"SYMBOL_FRACTION = {fraction}", f"INSTRUCTION_MIXTURE = '{other}'",
                 f"SYMBOL_MIXTURE = '{symbol_mixture}'"]
  args = parse(["symbol_tuning_flan_t5_small.gin", "symbol_tuning_mix.gin"], bindings)
  name = args["train_dataset_cfg"].mixture_or_task_name
  assert isinstance(name, str) and name in seqio.MixtureRegistry.names()
  mixture = seqio.MixtureRegistry.get(name)
  parts = {t.name for t in mixture.tasks}
  symbol_prefix = "symbol_tuning.bigbench." if symbol_mixture else "symbol_tuning.tune."
  other_prefix = ("symbol_tuning.bigbench_instruct." if other else "symbol_tuning.instruct.")
  assert any(p.startswith(symbol_prefix) for p in parts)
  assert any(p.startswith(other_prefix) for p in parts)
  expected = fraction or 0.16
  assert name == f"{symbol_mixture or 'symbol_tuning'}_{round(expected * 100)}pct_" \
                 f"{other or 'instruction_tuning'}"


@pytest.mark.parametrize("size", SIZES)
def test_eval_file_parses(parse, size):
  import seqio  # pylint: disable=import-outside-toplevel

  args = parse([f"symbol_tuning_eval_flan_t5_{size}.gin"],
               ["CHECKPOINT_PATH = %FLAN_T5_CHECKPOINT", "EVAL_OUTPUT_DIR = '/tmp/eval'"],
               fn="evaluate")
  ds = args["dataset_cfg"]
  assert ds.mixture_or_task_name == "symbol_tuning_eval_symbols"
  assert (ds.split, ds.batch_size) == ("validation", 32)
  assert ds.task_feature_lengths == {"inputs": 2048, "targets": 128}
  assert args["restore_checkpoint_cfg"].path.endswith(f"checkpoint_{FLAN_T5_STEPS[size]}")
  assert args["partitioner"].num_partitions == {"xl": 2, "xxl": 8}.get(size, 1)
  assert args["model"].module.config.dropout_rate == 0.0
  # Every evaluation mixture the header lists is registered, with its queries in validation.
  header = (GIN_DIR / "symbol_tuning_eval.gin").read_text()
  for stem in ("symbol_tuning_eval", "symbol_tuning_eval_bigbench",
               "symbol_tuning_eval_rank", "symbol_tuning_eval_bigbench_rank"):
    assert f"{stem}_<setting>" in header
    for setting in EVAL_SETTINGS:
      mixture = seqio.get_mixture_or_task(f"{stem}_{setting}")
      assert all("validation" in t.splits for t in mixture.tasks)
  for name in OPTIONAL_MIXTURES:  # registered by others, perhaps later: named, not required
    assert name in header
