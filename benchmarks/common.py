"""Shared helpers for the benchmark scripts: environment, machine description, JSON output,
and the timing and packing loops that the T5 and decoder-only twins share."""
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("SYMBOL_TUNING_VOCAB", "local")

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def setup_bigbench() -> None:
  """BIGBENCH_DIR defaults to the workspace's shared copy when it exists."""
  from symbol_tuning import settings  # pylint: disable=g-import-not-at-top

  shared = settings.shared_dir() / "data" / "bigbench"
  if "BIGBENCH_DIR" not in os.environ and shared.is_dir():
    os.environ["BIGBENCH_DIR"] = str(shared)
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.ERROR)


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}


def write(name: str, figures: dict) -> pathlib.Path:
  RESULTS_DIR.mkdir(exist_ok=True)
  path = RESULTS_DIR / f"{name}.json"
  path.write_text(json.dumps({"benchmark": name, "machine": machine(), **figures}, indent=1))
  print(f"wrote {path}")
  return path


def timed(fn):
  """(fn(), seconds it took)."""
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


# --- training-step throughput (train_step.py, decoder_train_step.py) ---------------------
def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """Float32 FLOP/s of a large jitted matmul: the practical peak of this CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def print_matmul_peak() -> float:
  """Measures, prints and returns the matmul peak."""
  import jax  # pylint: disable=g-import-not-at-top

  peak = matmul_peak()
  print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({jax.device_count()} device, "
        f"{machine()['cpu_count']} cores)")
  return peak


DEFAULT_FAMILY = "t5"


def add_family_flag(parser) -> None:
  """--family: the model family (symbol_tuning.models.registry) a benchmark runs."""
  from symbol_tuning.models import registry  # pylint: disable=g-import-not-at-top

  parser.add_argument("--family", default=DEFAULT_FAMILY, choices=list(registry.FAMILIES),
                      help=f"model family (default {DEFAULT_FAMILY})")


def result_name(benchmark: str, family: str) -> str:
  """benchmarks/results/<name>.json: the default family's keeps the historical name
  (train_step), another family's is prefixed (decoder_train_step)."""
  return benchmark if family == DEFAULT_FAMILY else f"{family}_{benchmark}"


def time_train_step(family, model, init_params, batch: dict, steps: int
                    ) -> tuple[float, float, dict]:
  """(seconds per step, XLA cost-analysis FLOPs per step, initial params) of the embedded
  trainer's jitted step (forward, backward, Adafactor update) on `batch`, one device:
  compiled and warmed up first, then `steps` steps timed."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  from symbol_tuning.training import partitioning, trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  batch_size = len(next(iter(batch.values())))
  tcfg = trainer_lib.TrainConfig(model_dir="/tmp/unused", mixture_or_task_name="unused",
                                 train_steps=steps, batch_size=batch_size, dropout_rate=0.0)
  optimizer = trainer_lib.make_optimizer(tcfg)
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.STANDARD_RULES):
    params = init_params()
    state = {"params": params, "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32)}
    step = jax.jit(trainer_lib.make_train_step(model, optimizer, tcfg, family),
                   donate_argnums=(0,))
    data = {k: jnp.asarray(v) for k, v in batch.items()}
    rng = jax.random.PRNGKey(0)
    compiled = step.lower(state, data, rng).compile()
    cost = compiled.cost_analysis()
    xla_flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    state, metrics = step(state, data, rng)  # warm up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, data, rng)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
  return seconds, xla_flops, params


def four_segments(batch: int, length: int):
  """(segment ids, positions), each (batch, length): rows packed with four equal examples."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  segments = np.repeat(np.arange(1, 5, dtype=np.int32), length // 4)[None].repeat(batch, 0)
  positions = np.tile(np.arange(length // 4, dtype=np.int32), 4)[None].repeat(batch, 0)
  return segments, positions


def add_mfu(row: dict, peak: float) -> dict:
  """Adds model FLOP/s and their share of the measured matmul peak to a timed row."""
  row["model_flops_per_s"] = row["model_flops_per_step"] / row["seconds_per_step"]
  row["mfu"] = row["model_flops_per_s"] / peak
  return row


# --- packing efficiency (packing.py) -------------------------------------------------------
def packed_rows(name: str, lengths: dict, rows: int, feature_converter, seed: int = 0):
  """The first `rows` packed training rows (numpy dicts) of mixture/task `name`."""
  import seqio  # pylint: disable=g-import-not-at-top

  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import

  ds = seqio.get_dataset(name, task_feature_lengths=lengths, dataset_split="train",
                         shuffle=True, num_epochs=None, seed=seed,
                         feature_converter=feature_converter)
  return ds.take(rows).as_numpy_iterator()


def p10_p90(values) -> list[float]:
  import numpy as np  # pylint: disable=g-import-not-at-top

  return [float(np.percentile(values, 10)), float(np.percentile(values, 90))]
