#!/usr/bin/env python3
"""Symbol tuning on a Cloud TPU VM or pod slice with t5x: create, set up, run, delete.

Stdlib only; it drives `gcloud compute tpus tpu-vm ...`. Every command that touches the VM
runs on all its workers (`--worker=all`): a pod slice has one host per 4 chips, and a t5x
job hangs unless every host runs the same binary.

  python launch/tpu_vm.py create --name st --zone us-central2-b --accelerator v4-32
  python launch/tpu_vm.py setup  --name st --zone us-central2-b
  python launch/tpu_vm.py run    --name st --zone us-central2-b \
      --gin_file=symbol_tuning_flan_t5_xl.gin \
      --gin.MODEL_DIR="'gs://BUCKET/symbol_tuning/flan_t5_xl'"
  python launch/tpu_vm.py delete --name st --zone us-central2-b
  python launch/tpu_vm.py up ... --delete     (create + setup + run, then delete)

`--dry-run` prints every command, one per line, exactly as it would run. `--gin.NAME=VALUE`
overrides reach the remote t5x binary byte-identical (quoted for the ssh hop); arguments
after a bare `--` are passed to the binary as they are.

On each worker (paths relative to the home directory):
  st-venv/          Python 3.11 venv (uv-managed: the TPU images ship 3.10, the project needs 3.11)
  t5x/              t5x from git, installed with its [tpu] extra (jax[tpu] + libtpu)
  symbol-tuning/    this project (git clone of --repo_url, or a tarball of --source_dir),
                    installed without its pinned CPU dependencies (t5x brings jax/seqio/TF)
  symbol_tuning_data/  --data_dir's copy: SYMBOL_TUNING_DATA_DIR; its bigbench/ is BIGBENCH_DIR
  symbol_tuning_logs/  logs of --detach runs
"""
import argparse
import os
import pathlib
import shlex
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  pylint: disable=wrong-import-position

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
VENV, T5X, PROJECT, DATA, LOGS = ("st-venv", "t5x", "symbol-tuning", "symbol_tuning_data",
                                  "symbol_tuning_logs")
TARBALL = "symbol-tuning-src.tar.gz"
LIBTPU_RELEASES = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# Our own imports beyond what t5x installs (seqio, TF, jax, gin, sentencepiece). Not our
# setup.py's pins: those are a CPU stack and would replace the TPU build of jax.
EXTRA_PACKAGES = ("wordfreq", "datasets", "tensorboard")
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


def create_commands(args):
  cmd = _gcloud(args, "create", args.name) + [f"--accelerator-type={args.accelerator}",
                                              f"--version={args.version}"]
  return [cmd + (["--spot"] if args.spot else [])]


def delete_commands(args):
  return [_gcloud(args, "delete", args.name) + ["--quiet"]]


def setup_commands(args):
  """Python 3.11 venv, t5x with jax[tpu], then this project and its few extra imports."""
  python = f"{VENV}/bin/python"
  pip = (python, "-m", "pip", "install", "-q")
  steps = [
      # uv provides Python 3.11; PIP_BREAK_SYSTEM_PACKAGES lets a --user install through on
      # images whose system Python is externally managed (older pips ignore it).
      "PIP_BREAK_SYSTEM_PACKAGES=1 " + _sh("python3", "-m", "pip", "install", "-q", "--user",
                                           "-U", "uv"),
      f"[ -x {python} ] || " + _sh("python3", "-m", "uv", "venv", "--seed", "--python",
                                   args.python, VENV),
      _sh("rm", "-rf", T5X),
      _sh("git", "clone", "-q", args.t5x_url, T5X),
      _sh("git", "-C", T5X, "checkout", "-q", args.t5x_ref),
      _sh(*pip, "-e", f"./{T5X}[tpu]", "-f", LIBTPU_RELEASES),
      _sh("rm", "-rf", PROJECT),
  ]
  commands = []
  if args.repo_url:
    steps += [_sh("git", "clone", "-q", args.repo_url, PROJECT)]
    if args.repo_ref:
      steps += [_sh("git", "-C", PROJECT, "checkout", "-q", args.repo_ref)]
  else:  # a tarball of a local checkout, copied to every worker
    tarball = os.path.join(tempfile.gettempdir(), TARBALL)
    commands += [
        ["tar", "--exclude=.git", "--exclude=__pycache__", "--exclude=*.egg-info",
         "--exclude=.venv", "-czf", tarball, "-C", str(args.source_dir), "."],
        scp_all(args, tarball, TARBALL),
    ]
    steps += [_sh("mkdir", "-p", PROJECT), _sh("tar", "-xzf", TARBALL, "-C", PROJECT)]
  steps += [_sh(*pip, "--no-deps", "-e", f"./{PROJECT}"),
            _sh(*pip, *EXTRA_PACKAGES, *args.pip)]
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


def binary_argv(args, gin_overrides, passthrough):
  """The t5x binary's argv on the worker (cwd: the project checkout)."""
  flags = [f"--gin_search_paths={args.gin_search_paths}"]
  flags += [f"--gin_file={name}" for name in args.gin_file]
  return ["-m", BINARIES[args.binary], *flags, *gin_overrides, "--alsologtostderr",
          *passthrough]


def run_commands(args, gin_overrides, passthrough):
  if not args.gin_file:
    raise SystemExit("error: run needs at least one --gin_file (see gin/t5x/)")
  # Fixed strings of ours stay unquoted where the shell must expand $HOME; every value that
  # comes from the user goes through shlex.quote (inside _sh).
  steps = ["set -e", f"cd \"$HOME/{PROJECT}\""]
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


def build_parser():
  common_flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common_flags.add_argument("--name", required=True, help="TPU VM name")
  common_flags.add_argument("--zone", required=True, help="e.g. us-central2-b")
  common_flags.add_argument("--project", help="GCP project (default: gcloud's)")
  common_flags.add_argument("--dry-run", action="store_true",
                            help="print the commands, one per line, instead of running them")

  create = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  create.add_argument("--accelerator", default="v4-32",
                      help="accelerator type, e.g. v4-8, v4-32 (the gin files assume v4-32)")
  create.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version")
  create.add_argument("--spot", action="store_true", help="a Spot (preemptible) VM")

  setup = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  setup.add_argument("--repo_url", help="git URL of this project to clone on the workers "
                                        "(default: copy a tarball of --source_dir)")
  setup.add_argument("--repo_ref", help="branch, tag or commit of --repo_url")
  setup.add_argument("--source_dir", default=str(REPO_DIR), help="local checkout to copy")
  setup.add_argument("--t5x_url", default="https://github.com/google-research/t5x")
  setup.add_argument("--t5x_ref", default="main", help="branch, tag or commit of t5x")
  setup.add_argument("--python", default="3.11", help="Python version of the workers' venv")
  setup.add_argument("--pip", action="append", default=[], metavar="REQ",
                     help="one more package to install on the workers (repeatable)")

  run = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  run.add_argument("--binary", choices=sorted(BINARIES), default="train",
                   help="t5x.train or t5x.eval")
  common.add_gin_file_flag(run)
  run.add_argument("--gin_search_paths", default="gin/t5x",
                   help="on the workers, relative to the project checkout")
  run.add_argument("--data_dir", help="data for the workers: a gs:// path (synced on each "
                   "worker) or a local folder (copied); laid out as SYMBOL_TUNING_DATA_DIR, "
                   "with an optional bigbench/ subfolder for BIGBENCH_DIR")
  run.add_argument("--detach", action="store_true",
                   help="run under nohup (survives a dropped ssh); read it with `logs`")
  run.add_argument("--job", default="symbol_tuning", help="log name of a --detach run")

  logs = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  logs.add_argument("--job", default="symbol_tuning")
  logs.add_argument("--lines", type=int, default=100)

  parser = argparse.ArgumentParser(
      prog="tpu_vm.py", description=__doc__.split("\n\n", 1)[0], allow_abbrev=False,
      epilog="--gin.NAME=VALUE (repeatable) overrides gin bindings for run/up.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, parents, help_ in (
      ("create", [create], "create the TPU VM / pod slice"),
      ("setup", [setup], "install t5x, jax[tpu] and this project on every worker"),
      ("run", [run], "run t5x's train or eval binary on every worker"),
      ("logs", [logs], "follow the log of a --detach run on every worker"),
      ("delete", [], "delete the TPU VM"),
      ("up", [create, setup, run], "create + setup + run (+ delete with --delete)"),
  ):
    p = sub.add_parser(name, parents=[common_flags, *parents], help=help_, allow_abbrev=False)
    if name == "up":
      p.add_argument("--delete", action="store_true", help="delete the VM when the run ends "
                                                           "(also after a failure)")
  return parser


def main(argv=None) -> int:
  own, gin_overrides, passthrough = common.split_argv(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  args = parser.parse_args(own)
  if getattr(args, "delete", False) and args.detach:
    parser.error("--delete with --detach would delete the VM under the running job")
  if (gin_overrides or passthrough) and args.command not in ("run", "up"):
    raise SystemExit(f"error: --gin.* and -- arguments are for run/up, not {args.command}")
  build = {"create": create_commands, "setup": setup_commands, "delete": delete_commands,
           "logs": logs_commands,
           "run": lambda a: run_commands(a, gin_overrides, passthrough)}
  if args.command != "up":
    return common.run(build[args.command](args), args.dry_run)
  commands = create_commands(args) + setup_commands(args) + run_commands(
      args, gin_overrides, passthrough)
  try:
    return common.run(commands, args.dry_run)
  finally:
    if args.delete:  # also when a step failed: an idle slice still bills
      common.run(delete_commands(args), args.dry_run)


if __name__ == "__main__":
  sys.exit(main())
