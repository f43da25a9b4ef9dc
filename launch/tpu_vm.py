#!/usr/bin/env python3
"""Symbol tuning on a Cloud TPU VM or pod slice with t5x: create, set up, run, delete.

Stdlib only; it drives `gcloud compute tpus ...`. Every command that touches the VM
runs on all its workers (`--worker=all`): a pod slice has one host per 4 chips, and a t5x
job hangs unless every host runs the same binary.

  python launch/tpu_vm.py create --name st --zone us-central2-b --accelerator v4-32
  python launch/tpu_vm.py setup  --name st --zone us-central2-b
  python launch/tpu_vm.py run    --name st --zone us-central2-b \
      --gin_file=symbol_tuning_flan_t5_xl.gin \
      --gin.MODEL_DIR="'gs://BUCKET/symbol_tuning/flan_t5_xl'"
  python launch/tpu_vm.py delete --name st --zone us-central2-b
  python launch/tpu_vm.py up ... --delete     (create + setup + run, then delete)

Queued resources (how v5e, v5p and v6e capacity is handed out; Spot or best-effort):
  python launch/tpu_vm.py create --queued --spot --name st --zone ZONE --accelerator v6e-16
  python launch/tpu_vm.py wait   --name st --zone ZONE     (until ACTIVE, with progress)
  python launch/tpu_vm.py delete --queued --name st --zone ZONE
  python launch/tpu_vm.py supervise --spot --name st --zone ZONE --accelerator v5p-32 \
      --max_retries 5 --gin_file=... --gin.MODEL_DIR="'gs://...'"
      (request, set up, run; after a preemption delete, request again and rerun the same
      command, which resumes from MODEL_DIR's newest checkpoint)

`--accelerator` picks the TPU software version (RUNTIME_VERSIONS, from Cloud TPU's table of
versions for JAX) and, for v5e and v5p, the partitioning of the Flan-T5 gin files
(gin/t5x/tpu/). `--env KEY=VALUE` is exported on every worker before the binary starts.
`--dry-run` prints every command, one per line, exactly as it would run. `--gin.NAME=VALUE`
overrides reach the remote t5x binary byte-identical (quoted for the ssh hop); arguments
after a bare `--` are passed to the binary as they are.

On each worker (paths relative to the home directory):
  st-venv/          Python 3.11 venv (uv-managed: the TPU images ship 3.10, the project needs 3.11)
  symbol-tuning/    this project (git clone of --repo_url, or a tarball of --source_dir's
                    files that git would commit: launch/pack_source.py),
                    installed with its pinned stack, then jax[tpu] at that same jax version
  t5x/ airio/ jestimator/  git checkouts at the commits the tests use (T5X_PINS: the
                    snapshots in ../shared/vendor), installed without their unpinned
                    dependencies; what they import beyond ours: tests/requirements-t5x.txt
  symbol_tuning_data/  --data_dir's copy: SYMBOL_TUNING_DATA_DIR; its bigbench/ is BIGBENCH_DIR
  symbol_tuning_logs/  logs of --detach runs
"""
import argparse
import os
import pathlib
import re
import shlex
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  pylint: disable=wrong-import-position
import queued  # noqa: E402  pylint: disable=wrong-import-position

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
PACK_SOURCE = pathlib.Path(__file__).resolve().with_name("pack_source.py")
VENV, PROJECT, DATA, LOGS = ("st-venv", "symbol-tuning", "symbol_tuning_data",
                             "symbol_tuning_logs")
TARBALL = "symbol-tuning-src.tar.gz"
LIBTPU_RELEASES = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# (folder, git URL, commit): the snapshots in ../shared/vendor that the tests run t5x's
# binaries from (see its README.md), so a slice runs the t5x the tests checked.
T5X_PINS = (
    ("t5x", "https://github.com/google-research/t5x",
     "cc342d419ec3e3e9c4bf1df33c82330cafdc1e16"),
    ("airio", "https://github.com/google/airio", "69897df7d9a427b947a9f7bb4164c7782b43e601"),
    ("jestimator", "https://github.com/google-research/jestimator",
     "326824a477feef6d92e6f44175000907a72899ca"),
)
T5X_REQUIREMENTS = "tests/requirements-t5x.txt"  # t5x's imports beyond setup.py's pins
# Accelerator type prefix -> TPU software version for JAX (Cloud TPU's "TPU software
# versions" page) and the gin file with that generation's partitioning (None: the Flan-T5
# files' defaults, made for 32 GiB chips).
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
PARTITIONING_GIN = {"v4": None, "v5litepod": "tpu/v5e.gin", "v5p": "tpu/v5p.gin", "v6e": None}
FLAN_T5_GIN = re.compile(r"symbol_tuning(_eval)?_flan_t5_(small|base|large|xl|xxl)\.gin$")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
BINARIES = {"train": "t5x.train", "eval": "t5x.eval"}


def _gcloud(args, verb, *rest):
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={args.zone}"]
  return cmd + ([f"--project={args.project}"] if args.project else [])


def ssh_all(args, remote: str):
  """One command string run by the login shell of every worker."""
  return _gcloud(args, "ssh", args.name) + ["--worker=all", f"--command={remote}"]


def scp_all(args, local: str, remote: str, recurse=False):
  extra = ["--recurse"] if recurse else []
  return _gcloud(args, "scp", local, f"{args.name}:{remote}") + extra + ["--worker=all"]


def _sh(*argv) -> str:
  return shlex.join(argv)


def generation(accelerator: str) -> str:
  """'v5litepod-16' -> 'v5litepod'."""
  return accelerator.rsplit("-", 1)[0]


def create_commands(args):
  cmd = _gcloud(args, "create", args.name) + [f"--accelerator-type={args.accelerator}",
                                              f"--version={args.version}"]
  return [cmd + (["--spot"] if args.spot else [])]


def delete_commands(args):
  if getattr(args, "queued", False):
    return [queued.delete_command(args)]
  return [_gcloud(args, "delete", args.name) + ["--quiet"]]


def setup_commands(args):
  """Python 3.11 venv; this project with its pinned stack, jax[tpu] at the same jax
  version; t5x, airio and jestimator at pinned commits, their extra imports pinned."""
  python = f"{VENV}/bin/python"
  pip = (python, "-m", "pip", "install", "-q")
  steps = [
      # uv provides Python 3.11; PIP_BREAK_SYSTEM_PACKAGES lets a --user install through on
      # images whose system Python is externally managed (older pips ignore it).
      "PIP_BREAK_SYSTEM_PACKAGES=1 " + _sh("python3", "-m", "pip", "install", "-q", "--user",
                                           "-U", "uv"),
      f"[ -x {python} ] || " + _sh("python3", "-m", "uv", "venv", "--seed", "--python",
                                   args.python, VENV),
  ]
  for folder, url, commit in T5X_PINS:
    if folder == "t5x":  # another t5x only when asked for
      url, commit = args.t5x_url or url, args.t5x_ref or commit
    steps += [_sh("rm", "-rf", folder), _sh("git", "clone", "-q", url, folder),
              _sh("git", "-C", folder, "checkout", "-q", commit)]
  steps += [_sh("rm", "-rf", PROJECT)]
  commands = []
  if args.repo_url:
    steps += [_sh("git", "clone", "-q", args.repo_url, PROJECT)]
    if args.repo_ref:
      steps += [_sh("git", "-C", PROJECT, "checkout", "-q", args.repo_ref)]
  else:  # a tarball of a local checkout (the files git would commit), copied to every worker
    tarball = os.path.join(tempfile.gettempdir(), TARBALL)
    commands += [
        [sys.executable, str(PACK_SOURCE), str(args.source_dir), tarball],
        scp_all(args, tarball, TARBALL),
    ]
    steps += [_sh("mkdir", "-p", PROJECT), _sh("tar", "-xzf", TARBALL, "-C", PROJECT)]
  # jax and jaxlib are the same wheels on CPU and TPU: jax[tpu] at setup.py's jax version
  # only adds libtpu. t5x's own setup.py asks for git-only packages and unpinned extras.
  jax_version = f"$({python} -c 'import jax; print(jax.__version__)')"
  steps += [_sh(*pip, "-e", f"./{PROJECT}"),
            f"{_sh(*pip)} \"jax[tpu]=={jax_version}\" " + _sh("-f", LIBTPU_RELEASES),
            _sh(*pip, "--no-deps", "-e", f"./{T5X_PINS[0][0]}",
                *(f"./{folder}" for folder, _, _ in T5X_PINS[1:])),
            _sh(*pip, "-r", f"{PROJECT}/{T5X_REQUIREMENTS}")]
  if args.pip:
    steps += [_sh(*pip, *args.pip)]
  return commands + [ssh_all(args, "set -e; cd; " + "; ".join(steps))]


def data_commands(args):
  """Puts --data_dir on every worker's disk (our data sources read local paths)."""
  if not args.data_dir:
    return []
  if args.data_dir.startswith("gs://"):
    return [ssh_all(args, "set -e; cd; " + "; ".join([
        _sh("mkdir", "-p", DATA),
        _sh("gcloud", "storage", "rsync", "--recursive", args.data_dir, DATA)]))]
  return [ssh_all(args, "cd && " + _sh("rm", "-rf", DATA)),
          scp_all(args, args.data_dir, DATA, recurse=True)]


def partitioning_gin(args):
  """The generation's partitioning file, after Flan-T5 gin files only (they define the
  macros it selects); none on 32 GiB chips, where the files' defaults apply."""
  extra = PARTITIONING_GIN.get(generation(args.accelerator))
  if extra and any(FLAN_T5_GIN.search(name) for name in args.gin_file):
    return [extra]
  return []


def binary_argv(args, gin_overrides, passthrough):
  """The t5x binary's argv on the worker (cwd: the project checkout)."""
  flags = [f"--gin_search_paths={args.gin_search_paths}"]
  flags += [f"--gin_file={name}" for name in args.gin_file + partitioning_gin(args)]
  return ["-m", BINARIES[args.binary], *flags, *gin_overrides, "--alsologtostderr",
          *passthrough]


def run_commands(args, gin_overrides, passthrough):
  if not args.gin_file:
    raise SystemExit("error: run needs at least one --gin_file (see gin/t5x/)")
  # Fixed strings of ours stay unquoted where the shell must expand $HOME; every value that
  # comes from the user goes through shlex.quote (inside _sh).
  steps = ["set -e", f"cd \"$HOME/{PROJECT}\""]
  steps += [f"export {key}={shlex.quote(value)}" for key, value in args.env]
  if args.data_dir:
    steps += [f"export SYMBOL_TUNING_DATA_DIR=\"$HOME/{DATA}\"",
              f"if [ -d \"$HOME/{DATA}/bigbench\" ]; then "
              f"export BIGBENCH_DIR=\"$HOME/{DATA}/bigbench\"; fi"]
  binary = f"\"$HOME/{VENV}/bin/python\" " + _sh(*binary_argv(args, gin_overrides, passthrough))
  if args.detach:
    log = f"\"$HOME/{LOGS}/{args.job}.log\""
    steps += [f"mkdir -p \"$HOME/{LOGS}\"", f"nohup {binary} > {log} 2>&1 < /dev/null &",
              f"echo \"started on $(hostname); log: {LOGS}/{args.job}.log\""]
  else:
    steps += [f"exec {binary}"]
  return data_commands(args) + [ssh_all(args, "; ".join(steps))]


def logs_commands(args):
  return [ssh_all(args, f"tail -n {args.lines} -F \"$HOME/{LOGS}/{args.job}.log\"")]


def _env_pair(text):
  key, sep, value = text.partition("=")
  if not sep or not ENV_NAME.match(key):
    raise argparse.ArgumentTypeError(f"--env takes KEY=VALUE with KEY a shell variable name, "
                                     f"got {text!r}")
  return key, value


def build_parser():
  common_flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common_flags.add_argument("--name", required=True, help="TPU VM name (and queued resource ID)")
  common_flags.add_argument("--zone", required=True, help="e.g. us-central2-b")
  common_flags.add_argument("--project", help="GCP project (default: gcloud's)")
  common_flags.add_argument("--dry-run", action="store_true",
                            help="print the commands, one per line, instead of running them")

  accel = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  accel.add_argument("--accelerator", default="v4-32",
                     help="accelerator type: v4-N, v5litepod-N (v5e), v5p-N or v6e-N; picks "
                          "the TPU software version and the gin files' partitioning "
                          "(default v4-32, which the gin files assume)")

  create = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  create.add_argument("--version", help="TPU software version (default: the accelerator's, "
                                        + ", ".join(f"{k}: {v}" for k, v in
                                                    RUNTIME_VERSIONS.items()) + ")")
  create.add_argument("--spot", action="store_true", help="a Spot (preemptible) slice")

  queue = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  queue.add_argument("--best-effort", action="store_true",
                     help="queued resource in the best-effort tier (gcloud alpha)")
  queue.add_argument("--poll_seconds", type=float, default=30.0,
                     help="seconds between state checks while waiting for ACTIVE")
  queue.add_argument("--wait_timeout", type=float, default=0.0,
                     help="give up waiting after this many seconds (0: wait as long as it takes)")

  setup = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  setup.add_argument("--repo_url", help="git URL of this project to clone on the workers "
                                        "(default: copy a tarball of --source_dir)")
  setup.add_argument("--repo_ref", help="branch, tag or commit of --repo_url")
  setup.add_argument("--source_dir", default=str(REPO_DIR),
                     help="local checkout to copy: the files git would commit "
                          "(launch/pack_source.py)")
  setup.add_argument("--t5x_url", help=f"t5x git URL (default {T5X_PINS[0][1]})")
  setup.add_argument("--t5x_ref", help="t5x branch, tag or commit (default: the pinned "
                                       f"commit {T5X_PINS[0][2][:12]}, the tests' snapshot)")
  setup.add_argument("--python", default="3.11", help="Python version of the workers' venv")
  setup.add_argument("--pip", action="append", default=[], metavar="REQ",
                     help="one more package to install on the workers (repeatable)")

  run = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  run.add_argument("--binary", choices=sorted(BINARIES), default="train",
                   help="t5x.train or t5x.eval")
  common.add_gin_file_flag(run)
  run.add_argument("--gin_search_paths", default="gin/t5x",
                   help="on the workers, relative to the project checkout")
  run.add_argument("--env", action="append", default=[], type=_env_pair, metavar="KEY=VALUE",
                   help="environment variable for the binary on every worker (repeatable), "
                        "e.g. SYMBOL_TUNING_PROMPT_WORKERS=4")
  run.add_argument("--data_dir", help="data for the workers: a gs:// path (synced on each "
                   "worker) or a local folder (copied); laid out as SYMBOL_TUNING_DATA_DIR, "
                   "with an optional bigbench/ subfolder for BIGBENCH_DIR")
  run.add_argument("--detach", action="store_true",
                   help="run under nohup (survives a dropped ssh); read it with `logs`")
  run.add_argument("--job", default="symbol_tuning", help="log name of a --detach run")

  logs = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  logs.add_argument("--job", default="symbol_tuning")
  logs.add_argument("--lines", type=int, default=100)

  queued_flag = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  queued_flag.add_argument("--queued", action="store_true",
                           help="as a queued resource (`gcloud compute tpus queued-resources`)")

  parser = argparse.ArgumentParser(
      prog="tpu_vm.py", description=__doc__.split("\n\n", 1)[0], allow_abbrev=False,
      epilog="--gin.NAME=VALUE (repeatable) overrides gin bindings for run/up/supervise.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, parents, help_ in (
      ("create", [accel, create, queued_flag, queue],
       "create the TPU VM / pod slice (--queued: request it and wait until ACTIVE)"),
      ("wait", [queue], "wait until a queued resource is ACTIVE, showing its state"),
      ("setup", [setup], "install t5x, jax[tpu] and this project on every worker"),
      ("run", [accel, run], "run t5x's train or eval binary on every worker"),
      ("logs", [logs], "follow the log of a --detach run on every worker"),
      ("delete", [queued_flag], "delete the TPU VM (--queued: the queued resource and its VM)"),
      ("up", [accel, create, queued_flag, queue, setup, run],
       "create + setup + run (+ delete with --delete)"),
      ("supervise", [accel, create, queue, setup, run],
       "queued resource + setup + run, requested again and rerun after each preemption"),
  ):
    p = sub.add_parser(name, parents=[common_flags, *parents], help=help_, allow_abbrev=False)
    if name in ("up", "supervise"):
      p.add_argument("--delete", action="store_true", help="delete the slice when the run ends "
                                                           "(also after a failure)")
    if name == "supervise":
      p.add_argument("--max_retries", type=int, default=5,
                     help="how many times a lost slice is requested again before giving up")
  return parser


def _check(parser, args, gin_overrides, passthrough):
  """Refusals that argparse cannot express; fills in the software version."""
  if getattr(args, "delete", False) and getattr(args, "detach", False):
    parser.error("--delete with --detach would delete the VM under the running job")
  if (gin_overrides or passthrough) and args.command not in ("run", "up", "supervise"):
    raise SystemExit(f"error: --gin.* and -- arguments are for run/up/supervise, not "
                     f"{args.command}")
  if hasattr(args, "accelerator"):
    known = generation(args.accelerator) in RUNTIME_VERSIONS
    if not known and (args.command == "run" or not getattr(args, "version", None)):
      parser.error(f"unknown accelerator type {args.accelerator!r}: this launcher knows "
                   + ", ".join(f"{g}-N" for g in RUNTIME_VERSIONS)
                   + ("" if args.command == "run" else "; or pass --version for another"))
    if hasattr(args, "version") and not args.version:
      args.version = RUNTIME_VERSIONS[generation(args.accelerator)]
  if args.command in ("create", "up") and args.best_effort and not args.queued:
    parser.error("--best-effort is a tier of queued resources: add --queued")
  if args.command in ("create", "up", "supervise") and args.spot and args.best_effort:
    parser.error("--spot and --best-effort are two different tiers: choose one")
  if args.command == "supervise":
    if args.detach:
      parser.error("supervise needs the run's exit status to tell a preemption: no --detach")
    if args.max_retries < 0:
      parser.error("--max_retries must be 0 or more")
    model_dirs = [o.split("=", 1)[1].strip("'\"") for o in gin_overrides
                  if o.split("=", 1)[0] == "--gin.MODEL_DIR"]
    # An eval run just starts again; a training run must find its checkpoints.
    if args.binary == "train" and (not model_dirs or not model_dirs[-1].startswith("gs://")):
      parser.error("supervise reruns the job on a new slice, whose disks are empty: give "
                   "--gin.MODEL_DIR=\"'gs://BUCKET/...'\" so that it resumes from there")


def main(argv=None) -> int:
  own, gin_overrides, passthrough = common.split_argv(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  args = parser.parse_args(own)
  _check(parser, args, gin_overrides, passthrough)
  build = {"create": create_commands, "setup": setup_commands, "delete": delete_commands,
           "logs": logs_commands,
           "run": lambda a: run_commands(a, gin_overrides, passthrough)}
  if args.command == "create" and args.queued:
    return queued.create_and_wait(args)
  if args.command == "wait":
    return queued.wait(args)
  if args.command == "supervise":
    return queued.supervise(args, setup_commands(args) + run_commands(
        args, gin_overrides, passthrough))
  if args.command != "up":
    return common.run(build[args.command](args), args.dry_run)
  work = setup_commands(args) + run_commands(args, gin_overrides, passthrough)
  try:
    if args.queued:
      code = queued.create_and_wait(args)
      return code or common.run(work, args.dry_run)
    return common.run(create_commands(args) + work, args.dry_run)
  finally:
    if args.delete:  # also when a step failed: an idle slice still bills
      common.run(delete_commands(args), args.dry_run)


if __name__ == "__main__":
  sys.exit(main())
