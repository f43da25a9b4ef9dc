"""Queued resources: request a TPU slice, wait until it is ACTIVE, keep a run going through
preemptions (`tpu_vm.py supervise`).

Stdlib only, like the rest of launch/: the launcher runs on a laptop with gcloud and plain
Python. The wait shows progress on stderr: one line rewritten in place on a terminal, one
line per change of state otherwise (a log file).

A Spot or best-effort slice can be taken back at any time; it cannot be restarted, only
deleted and requested again. What is lost with it is each worker's disk, so `supervise`
insists on a gs:// MODEL_DIR: t5x's train binary resumes from the newest checkpoint there,
and a job that restarts from it still stops at the same TRAIN_STEPS (README, Cloud TPU).
"""
import subprocess
import sys
import time

import common

ACTIVE = "ACTIVE"
# States of a request that is still on its way (CREATING / ACCEPTED are older names).
PENDING = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING")
# The slice is gone or going: the service took it back (a Spot preemption suspends the
# request; its node reads PREEMPTED), or the request could not be filled.
LOST = ("PREEMPTED", "SUSPENDING", "SUSPENDED", "FAILED", "DELETING")


class QueueError(RuntimeError):
  """gcloud did not answer the way the launcher needs; the message says what to do."""


def _gcloud(args, group, verb, *rest, alpha=False):
  cmd = ["gcloud", *(["alpha"] if alpha else []), "compute", "tpus", group, verb, *rest,
         f"--zone={args.zone}"]
  return cmd + ([f"--project={args.project}"] if args.project else [])


def create_command(args):
  """The request; --best-effort exists only in gcloud's alpha track."""
  tier = ["--spot"] if args.spot else ["--best-effort"] if args.best_effort else []
  return _gcloud(args, "queued-resources", "create", args.name, f"--node-id={args.name}",
                 f"--accelerator-type={args.accelerator}",
                 f"--runtime-version={args.version}", *tier,
                 alpha=args.best_effort)


def describe_command(args):
  return _gcloud(args, "queued-resources", "describe", args.name,
                 "--format=value(state.state)")


def node_state_command(args):
  return _gcloud(args, "tpu-vm", "describe", args.name, "--format=value(state)")


def delete_command(args):
  """--force deletes the slice's node first: without it a request with a node is refused."""
  return _gcloud(args, "queued-resources", "delete", args.name, "--force", "--quiet")


def _query(argv, echo=True) -> str:
  """One state word from gcloud (its --format=value(...) output)."""
  if echo:
    print(f"+ {common.format_command(argv)}", file=sys.stderr, flush=True)
  result = subprocess.run(argv, capture_output=True, text=True, check=False)
  if result.returncode:
    last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise QueueError(f"gcloud compute tpus {' '.join(argv[3:6])} failed with exit status "
                     f"{result.returncode}: {last}")
  return result.stdout.strip()


def state(args, echo=True) -> str:
  return _query(describe_command(args), echo)


def node_preempted(args) -> bool:
  return _query(node_state_command(args)) == "PREEMPTED"


def _elapsed(seconds: float) -> str:
  minutes, secs = divmod(int(seconds), 60)
  return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def wait_active(args, out=sys.stderr) -> str:
  """Polls the request every --poll_seconds until it is ACTIVE or lost; returns that state.

  Raises QueueError past --wait_timeout (0: no limit) or on a state it does not know.
  """
  start = time.monotonic()
  tty = out.isatty()
  last = None
  # Echoed once: the progress line below is rewritten in place on a terminal.
  print(f"+ {common.format_command(describe_command(args))}  (every {args.poll_seconds:g} s)",
        file=out, flush=True)
  while True:
    current = state(args, echo=False)
    waited = time.monotonic() - start
    line = f"queued resource {args.name}: {current or '(no state yet)'} after {_elapsed(waited)}"
    if tty:
      print(f"\r{line}\033[K", end="" if current in PENDING else "\n", file=out, flush=True)
    elif current != last:
      print(line, file=out, flush=True)
    last = current
    if current == ACTIVE or current in LOST:
      return current
    if current not in PENDING:
      raise QueueError(f"queued resource {args.name} is in state {current!r}, which this "
                       "launcher does not know: see `gcloud compute tpus queued-resources "
                       f"describe {args.name} --zone={args.zone}`")
    if args.wait_timeout and waited >= args.wait_timeout:
      raise QueueError(f"queued resource {args.name} still {current} after "
                       f"{_elapsed(waited)} (--wait_timeout {args.wait_timeout:g}); it stays "
                       "queued: wait again with `tpu_vm.py wait`, or `delete --queued` it")
    time.sleep(args.poll_seconds)


def create_and_wait(args) -> int:
  """`create --queued`: request the slice and wait for it (progress on stderr)."""
  if args.dry_run:  # the describe command is the one polled until ACTIVE
    return common.run([create_command(args), describe_command(args)], True)
  return common.run([create_command(args)], False) or wait(args)


def wait(args) -> int:
  if args.dry_run:
    return common.run([describe_command(args)], True)
  try:
    final = wait_active(args)
  except QueueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if final != ACTIVE:
    print(f"error: queued resource {args.name} is {final}: delete it (`tpu_vm.py delete "
          "--queued`) and request it again", file=sys.stderr)
    return 1
  return 0


def supervise(args, commands) -> int:
  """Request, wait, set up and run; after a preemption delete, request again and rerun.

  `commands` (the setup and run commands for a fresh slice) are the same list every time,
  so every attempt runs the same job, which resumes from MODEL_DIR's newest checkpoint. A
  run that fails on a slice that is still ACTIVE is the job's own failure: not retried.
  """
  if args.dry_run:  # one attempt, as it would run
    lines = [create_command(args), describe_command(args), *commands]
    return common.run(lines + ([delete_command(args)] if args.delete else []), True)
  recreated = 0
  try:
    while True:
      code = common.run([create_command(args)], False)
      if code:
        return code
      final = wait_active(args)
      if final == ACTIVE:
        code = common.run(commands, False)
        if code == 0:
          print(f"supervise: the run finished (slice requested {recreated + 1} time(s))",
                file=sys.stderr)
          return _finish(args, 0)
        final = state(args)
        if final == ACTIVE and not node_preempted(args):
          print(f"error: the run failed with exit status {code} on slice {args.name}, which "
                "is still ACTIVE: a failure of the job, not a preemption; not retried",
                file=sys.stderr)
          return _finish(args, code)
        final = final if final != ACTIVE else "PREEMPTED"
      # Spot capacity was taken back (or the request failed): a suspended request cannot
      # be reused, only deleted and made again.
      print(f"supervise: slice {args.name} is {final}; deleting the request", file=sys.stderr)
      common.run([delete_command(args)], False)
      if recreated >= args.max_retries:
        print(f"error: slice {args.name} was lost {recreated + 1} time(s) and --max_retries "
              f"is {args.max_retries}: giving up. The checkpoints in MODEL_DIR stay; the same "
              "supervise command resumes from the newest one.", file=sys.stderr)
        return 1
      recreated += 1
      print(f"supervise: requesting {args.name} again ({recreated} of {args.max_retries}); "
            "the same run resumes from MODEL_DIR's newest checkpoint", file=sys.stderr)
  except QueueError as e:  # gcloud could not say what the slice is doing
    print(f"error: {e}", file=sys.stderr)
    return _finish(args, 1)


def _finish(args, code: int) -> int:
  if args.delete:  # an idle slice still bills
    common.run([delete_command(args)], False)
  return code
