"""Where the project's files and data live, and the environment variables that move them.

Environment variables (all optional):
  SYMBOL_TUNING_DATA_DIR  local copies of HF datasets: <dir>/<key>/ (README, "Data sources
                          and local copies"); a folder or a gs:// URL.
  BIGBENCH_DIR            a directory laid out as BIG-bench's `bigbench/benchmark_tasks`
                          (else the package's archive, sources/bigbench.py); a folder or a
                          gs:// URL.
  SYMBOL_TUNING_CATALOGUE_DIR  a folder of tune.json / eval.json / bigbench.json read
                          instead of the package's tasks/ (e.g. a copy whose revisions
                          `python -m symbol_tuning.data.sources.hf pin` rewrote).
  SYMBOL_TUNING_CACHE     where extracted and downloaded files go (~/.cache/symbol_tuning).
  SYMBOL_TUNING_SHARED    the workspace's shared/ folder (tests and benchmarks only).
  SYMBOL_TUNING_STORAGE_TIMEOUT  seconds a gs:// path (MODEL_DIR, data copies, BIG-bench,
                          vocabulary, --out) may take to answer (default 60).
  SYMBOL_TUNING_VOCAB     the vocabulary when neither --vocab nor set_vocabulary names one
                          (flan_t5 | local | a path; data/vocab.py).
  SYMBOL_TUNING_PROMPT_WORKERS  prompt worker processes: auto | N (data/prompt_workers.py).
  SYMBOL_TUNING_CACHE_LENGTHS    the lengths `symbol_tuning.data.cached_tasks` registers
                          cached twins at: INPUTS:TARGETS pairs, comma-separated (default
                          2048:512,512:32, the shipped t5x gin files' lengths).
  SYMBOL_TUNING_DEBUG     1: the CLI shows tracebacks instead of one-line errors.
  SYMBOL_TUNING_DATA_SOURCE  hf (default) or tfds: read the datasets TFDS has from TFDS
                          (README, "TFDS sources"; also --source and gin).
  TFDS_DATA_DIR           TFDS's prepared datasets, a local folder or gs:// (TFDS's own
                          variable; also --tfds_data_dir, as t5x's flag).
Read here too, as their owners define them: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / HF_ENDPOINT
(HuggingFace), and the multi-host markers JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID, TPU_WORKER_HOSTNAMES, SLURM_JOB_ID, SLURM_NTASKS (`cluster()`).

This is the only module that reads the environment; everything else takes these values as
arguments or calls the functions below (read at call time, so a test's monkeypatch holds).
"""
import dataclasses
import os
import pathlib

from etils import epath

from symbol_tuning import paths

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _packaged_or_repo(name: str) -> pathlib.Path:
  """gin/ and tasks/ sit at the repo top; a wheel carries them in symbol_tuning/_data/."""
  packaged = PACKAGE_DIR / "_data" / name
  return packaged if packaged.is_dir() else REPO_DIR / name


def catalogue_dir() -> pathlib.Path:
  override = os.environ.get("SYMBOL_TUNING_CATALOGUE_DIR")
  return pathlib.Path(override) if override else _packaged_or_repo("tasks")


def gin_dir() -> pathlib.Path:
  return _packaged_or_repo("gin")


def assets_dir() -> pathlib.Path:
  return PACKAGE_DIR / "assets"


def data_dir() -> epath.Path | None:
  """$SYMBOL_TUNING_DATA_DIR: a local folder (made absolute) or gs://bucket/folder."""
  value = os.environ.get("SYMBOL_TUNING_DATA_DIR")
  return paths.path(value) if value else None


def bigbench_dir() -> epath.Path | None:
  """$BIGBENCH_DIR: a local folder (made absolute) or gs://bucket/folder."""
  value = os.environ.get("BIGBENCH_DIR")
  return paths.path(value) if value else None


def cache_dir() -> pathlib.Path:
  value = os.environ.get("SYMBOL_TUNING_CACHE", "~/.cache/symbol_tuning")
  return pathlib.Path(value).expanduser()


def shared_dir() -> pathlib.Path:
  """The workspace's shared/ folder: $SYMBOL_TUNING_SHARED, else ../shared beside the repo."""
  value = os.environ.get("SYMBOL_TUNING_SHARED")
  return pathlib.Path(value).expanduser() if value else REPO_DIR.parent / "shared"


def storage_timeout() -> float:
  """Seconds the first touch of a gs:// folder may take before it is called unreachable."""
  return float(os.environ.get("SYMBOL_TUNING_STORAGE_TIMEOUT", "60"))


def quiet_native_logging() -> None:
  """Defaults TF_CPP_MIN_LOG_LEVEL to 2 (errors only) unless the user set it: TensorFlow's
  C++ code reads it once, at import, so the CLI calls this before anything imports TF. The one
  variable the project writes, and it is TensorFlow's own setting."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def vocabulary_spec() -> str | None:
  """$SYMBOL_TUNING_VOCAB, or None."""
  return os.environ.get("SYMBOL_TUNING_VOCAB") or None


PROMPT_WORKERS_VARIABLE = "SYMBOL_TUNING_PROMPT_WORKERS"


def prompt_workers() -> str:
  """$SYMBOL_TUNING_PROMPT_WORKERS as given ('auto' when unset); prompt_workers parses it."""
  return os.environ.get(PROMPT_WORKERS_VARIABLE, "auto").strip()


def environment_fingerprint() -> int:
  """Changes whenever any variable does: worker processes started under another
  environment would build stale data."""
  return hash(frozenset(os.environ.items()))


def debug() -> bool:
  return bool(os.environ.get("SYMBOL_TUNING_DEBUG"))


def hf_offline() -> bool:
  """HuggingFace's own offline switches (either one)."""
  return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def hf_endpoint() -> str:
  return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """What the environment says of a multi-host job (all empty on one host)."""
  coordinator: str = ""        # JAX_COORDINATOR_ADDRESS: process 0's host:port
  tpu_hosts: str = ""          # TPU_WORKER_HOSTNAMES: comma-separated on a pod slice
  slurm_job: str = ""          # SLURM_JOB_ID
  slurm_tasks: int = 1         # SLURM_NTASKS
  num_processes: int | None = None  # JAX_NUM_PROCESSES, where set explicitly
  process_id: int | None = None     # JAX_PROCESS_ID, where set explicitly

  @property
  def multi_host(self) -> bool:
    return bool(self.coordinator) or "," in self.tpu_hosts or (
        bool(self.slurm_job) and self.slurm_tasks > 1)


def cluster() -> Cluster:
  env = os.environ
  optional = lambda name: int(env[name]) if env.get(name) else None  # pylint: disable=unnecessary-lambda-assignment
  return Cluster(coordinator=env.get("JAX_COORDINATOR_ADDRESS", ""),
                 tpu_hosts=env.get("TPU_WORKER_HOSTNAMES", ""),
                 slurm_job=env.get("SLURM_JOB_ID", ""),
                 slurm_tasks=int(env.get("SLURM_NTASKS", "1")),
                 num_processes=optional("JAX_NUM_PROCESSES"),
                 process_id=optional("JAX_PROCESS_ID"))


def data_source() -> str | None:
  """$SYMBOL_TUNING_DATA_SOURCE as written (checked by symbol_tuning.data.sources)."""
  return os.environ.get("SYMBOL_TUNING_DATA_SOURCE") or None


def tfds_data_dir() -> str | None:
  """$TFDS_DATA_DIR as a string: a gs:// URL stays one (pathlib would fold its '//')."""
  return os.environ.get("TFDS_DATA_DIR") or None


def cache_lengths() -> list[dict[str, int]]:
  """$SYMBOL_TUNING_CACHE_LENGTHS as sequence lengths: "2048:512,512:32" ->
  [{"inputs": 2048, "targets": 512}, {"inputs": 512, "targets": 32}]."""
  value = os.environ.get("SYMBOL_TUNING_CACHE_LENGTHS", "2048:512,512:32")
  lengths = []
  for part in value.split(","):
    inputs, _, targets = part.strip().partition(":")
    if not (inputs.isdigit() and targets.isdigit() and int(inputs) and int(targets)):
      raise ValueError(f"SYMBOL_TUNING_CACHE_LENGTHS={value!r}: {part.strip()!r} is not "
                       "INPUTS:TARGETS (two positive integers, e.g. 2048:512)")
    lengths.append({"inputs": int(inputs), "targets": int(targets)})
  return lengths
