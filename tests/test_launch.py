"""The launchers (launch/tpu_vm.py, launch/local.py): commands they print and run.

The gin overrides must reach t5x byte-identical after two shells: the local one (parsing
the printed line) and the worker's login shell (parsing the --command string). Checked two
ways: with shlex.split twice, and by running the printed line in bash against a fake
`gcloud` that runs --command in bash, with a fake venv python that records its argv.
"""
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tarfile
import textwrap

import pytest

import readme_support
from symbol_tuning import settings

REPO = pathlib.Path(__file__).resolve().parent.parent
TPU_VM = REPO / "launch" / "tpu_vm.py"
LOCAL = REPO / "launch" / "local.py"
BASE = ["--name", "st-test", "--zone", "us-central2-b"]
# Overrides with spaces, both quote kinds, a dict, $, backslashes, globs and non-ASCII.
OVERRIDES = [
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 2048, 'targets': 512}",
    "--gin.MODEL_DIR='gs://b/run 1'",
    '--gin.MIXTURE_OR_TASK_NAME="symbol_tuning_bigbench"',
    "--gin.utils.SaveCheckpointConfig.period=2000",
    "--gin.NOTE='it''s $HOME `x` \\n * ; && |'",
    "--gin.LABEL='über \"quoted\"'",
]
PASSTHROUGH = ["--seqio_additional_cache_dirs=gs://c/d e"]


def _launch(script, *args, env=None, check=True):
  result = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, env=env, check=False)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def _lines(*args):
  return _launch(TPU_VM, *args).stdout.splitlines()


def _binary_argv(line, module="t5x.train"):
  """The argv the t5x binary gets on a worker, parsed as the two shells would."""
  local = shlex.split(line)  # the local shell
  (command,) = [a for a in local if a.startswith("--command=")]
  remote = shlex.split(command[len("--command="):])  # the worker's login shell
  start = remote.index(module)
  return remote[start + 1:]


def _expected(gin_files, overrides=OVERRIDES, passthrough=()):
  return (["--gin_search_paths=gin/t5x"] + [f"--gin_file={f}" for f in gin_files]
          + list(overrides) + ["--alsologtostderr"] + list(passthrough))


def test_run_overrides_survive_both_shells():
  lines = _lines("run", *BASE, "--gin_file=symbol_tuning_flan_t5_xl.gin",
                 "--gin_file=symbol_tuning_mix.gin", *OVERRIDES, "--dry-run", "--",
                 *PASSTHROUGH)
  assert len(lines) == 1
  assert _binary_argv(lines[0]) == _expected(
      ["symbol_tuning_flan_t5_xl.gin", "symbol_tuning_mix.gin"], passthrough=PASSTHROUGH)


def test_eval_binary_and_detach():
  (line,) = _lines("run", *BASE, "--binary", "eval", "--detach", "--job", "ev",
                   "--gin_file=symbol_tuning_eval_flan_t5_xl.gin", *OVERRIDES, "--dry-run")
  argv = _binary_argv(line, "t5x.eval")
  # Detached: the argv ends at the redirection to the log.
  assert argv[:argv.index(">")] == _expected(["symbol_tuning_eval_flan_t5_xl.gin"])
  assert "nohup" in line and "symbol_tuning_logs/ev.log" in line


def test_every_worker_command_runs_on_all_workers(tmp_path):
  (tmp_path / "data").mkdir()
  lines = _lines("up", *BASE, "--accelerator", "v4-32", "--data_dir", str(tmp_path / "data"),
                 "--gin_file=symbol_tuning_flan_t5_small.gin", *OVERRIDES, "--dry-run")
  kinds = [shlex.split(line)[:5] for line in lines]
  worker_side = [line for line, k in zip(lines, kinds)
                 if k[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and k[4] in ("ssh", "scp")]
  assert len(worker_side) >= 5  # tarball copy, setup, data wipe + copy, run
  for line in worker_side:
    assert "--worker=all" in shlex.split(line), line
  assert kinds[0][4] == "create" and "--accelerator-type=v4-32" in shlex.split(lines[0])
  assert not any("delete" in k for k in kinds)  # not asked for
  assert _binary_argv(lines[-1]) == _expected(["symbol_tuning_flan_t5_small.gin"])


PACK_SOURCE = REPO / "launch" / "pack_source.py"


def _packed(source, out):
  result = _launch(PACK_SOURCE, str(source), str(out))
  with tarfile.open(out) as tar:
    return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers()}, result


def _write(root, files):
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


def test_setup_packs_the_files_git_would_commit(tmp_path):
  """`setup` copies what git would commit: tracked files as they are now (edits included,
  deleted ones left out) and untracked files .gitignore keeps; not a venv, build/ or runs/.
  Outside git, every file but the venv, build and cache folders."""
  src = tmp_path / "src"
  _write(src, {"pkg/a.py": "a = 1\n", "run.sh": "echo hi\n", "gone.py": "",
               ".gitignore": "build/\n/runs/\n.venv/\n"})
  (src / "run.sh").chmod(0o755)
  git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(git[:3] + ["init", "-q"], check=True)
  subprocess.run(git + ["add", "-A"], check=True)
  subprocess.run(git + ["commit", "-qm", "x"], check=True)
  (src / "gone.py").unlink()
  _write(src, {"pkg/a.py": "a = 2\n", "pkg/new.py": "b = 1\n", "build/lib/a.py": "",
               "runs/ckpt/x": "", ".venv/bin/python": "", "pkg/__pycache__/a.pyc": ""})
  (src / ".gitignore").write_text("build/\n/runs/\n.venv/\n__pycache__/\n")
  members, result = _packed(src, tmp_path / "git.tar.gz")
  assert sorted(members) == [".gitignore", "pkg/a.py", "pkg/new.py", "run.sh"]
  assert members["pkg/a.py"][0] == b"a = 2\n" and members["run.sh"][1] == 0o755
  assert "packed 4 files" in result.stderr
  # Outside git: every file but the skipped folders.
  subprocess.run(["rm", "-rf", str(src / ".git")], check=True)
  members, _ = _packed(src, tmp_path / "plain.tar.gz")
  assert sorted(members) == [".gitignore", "pkg/a.py", "pkg/new.py", "run.sh", "runs/ckpt/x"]
  # The worker unpacks it with GNU tar (no folder entries in the archive).
  unpacked = tmp_path / "unpacked"
  unpacked.mkdir()
  subprocess.run(["tar", "-xzf", str(tmp_path / "git.tar.gz"), "-C", str(unpacked)], check=True)
  assert (unpacked / "pkg" / "new.py").read_text() == "b = 1\n"
  assert os.access(unpacked / "run.sh", os.X_OK)
  # Bad input: one line, exit status 2.
  for args, message in (([str(tmp_path / "missing"), str(tmp_path / "a.tar.gz")],
                         "is not a folder (--source_dir)"),
                        ([str(src), str(tmp_path / "missing" / "a.tar.gz")],
                         "does not exist")):
    result = _launch(PACK_SOURCE, *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_packing_a_checkout_that_is_being_written_to_succeeds(tmp_path):
  """A build or a local run writing into the checkout while `setup` packs it: `tar` failed
  such a copy ("file changed as we read it"); the packer reads each file once."""
  src = tmp_path / "src"
  _write(src, {f"pkg/m{i}.py": "x = 1\n" * 2000 for i in range(200)})
  writer = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""\
          import os, time
          root = {str(src)!r}
          for i in range(100000):
            name = os.path.join(root, 'build%d' % (i % 7))
            open(name, 'w').write('x' * (i % 100))
            if i % 3 == 0:
              os.remove(name)
          """)])
  try:
    for attempt in range(3):
      members, _ = _packed(src, tmp_path / f"out{attempt}.tar.gz")
      assert {f"pkg/m{i}.py" for i in range(200)} <= set(members)
  finally:
    writer.kill()
    writer.wait()


def test_delete_only_when_asked():
  args = ["--gin_file=symbol_tuning_flan_t5_small.gin", "--repo_url", "https://x/y.git",
          "--dry-run"]
  without = _lines("up", *BASE, *args)
  with_delete = _lines("up", *BASE, *args, "--delete")
  assert with_delete[:-1] == without
  assert shlex.split(with_delete[-1])[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete",
                                              "st-test"]
  for command in ("create", "setup", "run"):
    extra = ["--gin_file=a.gin"] if command == "run" else []
    assert not any(" delete " in line for line in _lines(command, *BASE, *extra, "--dry-run"))
  assert len(_lines("delete", *BASE, "--dry-run")) == 1


def test_gcs_data_dir_is_synced_on_every_worker():
  lines = _lines("run", *BASE, "--data_dir", "gs://bucket/my data", "--gin_file=a.gin",
                 "--dry-run")
  sync = shlex.split(shlex.split(lines[0])[-1][len("--command="):])
  assert ["gcloud", "storage", "rsync", "--recursive", "gs://bucket/my data"] == sync[-6:-1]
  assert "SYMBOL_TUNING_DATA_DIR" in lines[-1] and "BIGBENCH_DIR" in lines[-1]


def test_bad_arguments_are_refused():
  assert _launch(TPU_VM, "run", *BASE, "--gin.X", "--gin_file=a", check=False).returncode
  assert _launch(TPU_VM, "create", *BASE, "--gin.X=1", check=False).returncode
  assert _launch(TPU_VM, "run", *BASE, "--dry-run", check=False).returncode  # no gin file
  assert _launch(TPU_VM, "up", *BASE, "--gin_file=a", "--detach", "--delete",
                 check=False).returncode


@pytest.fixture
def fake_cloud(tmp_path):
  """A PATH with a fake gcloud (runs ssh --command in bash with HOME=<worker home>, logs
  every call) and a worker home whose venv python records its argv."""
  home, bin_dir = tmp_path / "worker", tmp_path / "bin"
  (home / "symbol-tuning").mkdir(parents=True)
  (home / "st-venv" / "bin").mkdir(parents=True)
  bin_dir.mkdir()
  calls = tmp_path / "calls.jsonl"
  recorder = home / "st-venv" / "bin" / "python"
  recorder.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, sys
      with open({str(tmp_path / 'argv.json')!r}, 'w') as f:
        json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(),
                   'data': os.environ.get('SYMBOL_TUNING_DATA_DIR'),
                   'env': {{k: v for k, v in os.environ.items() if k.startswith('ENV_')}}}}, f)
      """))
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, os, subprocess, sys
      with open({str(calls)!r}, 'a') as f:
        f.write(json.dumps(sys.argv[1:]) + '\\n')
      command = [a for a in sys.argv if a.startswith('--command=')]
      if command:
        env = dict(os.environ, HOME={str(home)!r})
        sys.exit(subprocess.call(['bash', '-c', command[0][len('--command='):]], env=env,
                                 cwd={str(home)!r}))
      sys.exit(int(os.environ.get('FAKE_GCLOUD_EXIT', '0')))
      """))
  for script in (recorder, gcloud):
    script.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  return {"env": env, "calls": calls, "argv": tmp_path / "argv.json", "home": home}


def test_printed_line_runs_identically_in_bash(fake_cloud):
  (line,) = _lines("run", *BASE, "--gin_file=symbol_tuning_flan_t5_xl.gin", *OVERRIDES,
                   "--data_dir", "gs://b/d", "--dry-run", "--", *PASSTHROUGH)[-1:]
  subprocess.run(["bash", "-c", line], env=fake_cloud["env"], check=True)
  got = json.loads(fake_cloud["argv"].read_text())
  assert got["argv"][2:] == _expected(["symbol_tuning_flan_t5_xl.gin"],
                                      passthrough=PASSTHROUGH)
  assert got["argv"][:2] == ["-m", "t5x.train"]
  assert got["cwd"] == str(fake_cloud["home"] / "symbol-tuning")
  assert got["data"] == str(fake_cloud["home"] / "symbol_tuning_data")


def test_running_stops_at_a_failure_and_still_deletes(fake_cloud):
  env = dict(fake_cloud["env"], FAKE_GCLOUD_EXIT="3")  # `create` fails
  result = _launch(TPU_VM, "up", *BASE, "--repo_url", "https://x/y.git", "--gin_file=a.gin",
                   "--delete", env=env, check=False)
  assert result.returncode == 3
  calls = [json.loads(c) for c in fake_cloud["calls"].read_text().splitlines()]
  assert [c[3] for c in calls] == ["create", "delete"]  # nothing ran between the two


def test_run_executes_through_fake_gcloud(fake_cloud):
  result = _launch(TPU_VM, "run", *BASE, "--gin_file=symbol_tuning_flan_t5_base.gin",
                   *OVERRIDES, env=fake_cloud["env"], check=False)
  assert result.returncode == 0, result.stderr
  got = json.loads(fake_cloud["argv"].read_text())
  assert got["argv"][2:] == _expected(["symbol_tuning_flan_t5_base.gin"])
  assert got["data"] is None  # no --data_dir: the environment is left alone


@pytest.mark.parametrize("binary,mode,module", [("t5x", "train", ["-m", "t5x.train"]),
                                                ("t5x", "eval", ["-m", "t5x.eval"]),
                                                ("embedded", "train",
                                                 ["-m", "symbol_tuning.cli", "train"])])
def test_local_command_line(binary, mode, module):
  out = _launch(LOCAL, "--binary", binary, "--mode", mode, "--gin_file=a.gin",
                "--gin_file=b.gin", *OVERRIDES, "--data_dir", "/data/my dir", "--dry-run",
                "--", "--extra=1").stdout
  (line,) = out.splitlines()
  argv = shlex.split(line)
  assert argv[0] == "SYMBOL_TUNING_DATA_DIR=/data/my dir"
  assert argv[2:2 + len(module)] == module
  rest = argv[2 + len(module):]
  gin_files = ["--gin_file=a.gin", "--gin_file=b.gin"]
  if binary == "t5x":
    assert rest == ([f"--gin_search_paths={REPO / 'gin' / 't5x'}"] + gin_files + OVERRIDES
                    + ["--alsologtostderr", "--extra=1"])
  else:  # the embedded trainer's CLI takes t5x's flags; search paths only when given
    assert rest == gin_files + OVERRIDES + ["--extra=1"]


def test_local_runs_the_command(tmp_path):
  """Without --dry-run: the binary runs with the overrides and the environment."""
  fake_pkg = tmp_path / "t5x"
  fake_pkg.mkdir()
  (fake_pkg / "__init__.py").write_text("")
  (fake_pkg / "train.py").write_text(textwrap.dedent(f"""\
      import json, os, sys
      json.dump({{'argv': sys.argv[1:], 'vocab': os.environ.get('SYMBOL_TUNING_VOCAB')}},
                open({str(tmp_path / 'out.json')!r}, 'w'))
      """))
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  _launch(LOCAL, "--gin_file=a.gin", *OVERRIDES, "--vocab", "flan_t5", env=env)
  got = json.loads((tmp_path / "out.json").read_text())
  assert got["argv"][1:] == ["--gin_file=a.gin", *OVERRIDES, "--alsologtostderr"]
  assert got["vocab"] == "flan_t5"  # conftest sets local


# ---------------------------------------------------------------------------------------
# Queued resources, accelerator types, --env, the pinned t5x, and `supervise`: against a
# fake gcloud that records every call and plays scripted states (gcloud cannot run here).
# ---------------------------------------------------------------------------------------
ZONE = "--zone=us-central2-b"
QR = ["compute", "tpus", "queued-resources"]
DESCRIBE = QR + ["describe", "st-test", "--format=value(state.state)", ZONE]
DELETE_QR = QR + ["delete", "st-test", "--force", "--quiet", ZONE]
NODE_DESCRIBE = ["compute", "tpus", "tpu-vm", "describe", "st-test", "--format=value(state)",
                 ZONE]
MODEL_DIR = "--gin.MODEL_DIR='gs://bucket/run'"
SUPERVISE = ["supervise", *BASE, "--spot", "--accelerator", "v5litepod-16", "--repo_url",
             "https://x/y.git", "--poll_seconds", "0", "--env", "ENV_WORKERS=4",
             "--gin_file=symbol_tuning_flan_t5_xl.gin", MODEL_DIR]


def _create_qr(accelerator, version, *tier, alpha=False):
  return ((["alpha"] if alpha else []) + QR
          + ["create", "st-test", "--node-id=st-test", f"--accelerator-type={accelerator}",
             f"--runtime-version={version}", *tier, ZONE])


@pytest.fixture
def fake_queue(tmp_path):
  """run(plan, *args): the launcher against a fake gcloud that answers `describe` from
  plan['queued_states'] / plan['node_states'] and exits from plan['run_exits'] for the ssh
  calls that start the t5x binary (each list is consumed in order; its last entry repeats);
  plan['describe_error'] makes every describe fail with that message.
  Returns (result, recorded gcloud argvs)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls, plan_path = tmp_path / "calls.jsonl", tmp_path / "plan.json"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, sys
      argv = sys.argv[1:]
      with open({str(calls)!r}, 'a') as f:
        f.write(json.dumps(argv) + '\\n')
      with open({str(plan_path)!r}) as f:
        plan = json.load(f)
      def take(key, default):
        items = plan.get(key) or [default]
        value = items.pop(0) if len(items) > 1 else items[0]
        with open({str(plan_path)!r}, 'w') as f:
          json.dump(plan, f)
        return value
      if 'describe' in argv and plan.get('describe_error'):
        sys.exit(print(plan['describe_error'], file=sys.stderr) or 1)
      if 'describe' in argv:
        print(take('queued_states' if 'queued-resources' in argv else 'node_states', 'READY'))
      elif 'ssh' in argv and any(' -m t5x.' in a for a in argv):
        sys.exit(take('run_exits', 0))
      """))
  gcloud.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

  def run(plan, *args):
    plan_path.write_text(json.dumps(plan))
    calls.write_text("")
    result = _launch(TPU_VM, *args, env=env, check=False)
    return result, [json.loads(line) for line in calls.read_text().splitlines()]

  def run_bash(plan, script, **variables):
    """A bash script (README's text) run with the fake first on PATH, then this venv's."""
    plan_path.write_text(json.dumps(plan))
    calls.write_text("")
    path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])
    result = subprocess.run(["bash", "-euc", script], cwd=REPO, capture_output=True, text=True,
                            env=dict(env, PATH=path, TMPDIR=str(tmp_path), **variables),
                            timeout=600, check=False)
    return result, [json.loads(line) for line in calls.read_text().splitlines()]

  run.bash = run_bash
  return run


def _ssh_command(call):
  assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", "st-test"] and "--worker=all" in call
  (command,) = [a for a in call if a.startswith("--command=")]
  return command[len("--command="):]


def test_queued_create_waits_for_active_and_shows_progress(fake_queue):
  states = ["WAITING_FOR_RESOURCES", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
  result, calls = fake_queue({"queued_states": states}, "create", "--queued", "--spot", *BASE,
                             "--accelerator", "v5litepod-16", "--poll_seconds", "0")
  assert result.returncode == 0, result.stderr
  assert calls == [_create_qr("v5litepod-16", "v2-alpha-tpuv5-lite", "--spot")] + [DESCRIBE] * 4
  # Not a terminal: one progress line per change of state.
  progress = [line for line in result.stderr.splitlines() if line.startswith("queued resource")]
  assert [line.split(": ")[1].split(" after ")[0] for line in progress] == [
      "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]


def test_best_effort_is_queued_only_and_uses_gcloud_alpha():
  (create, describe) = _lines("create", "--queued", "--best-effort", *BASE, "--accelerator",
                              "v6e-8", "--dry-run")
  assert shlex.split(create)[1:] == _create_qr("v6e-8", "v2-alpha-tpuv6e", "--best-effort",
                                               alpha=True)
  assert shlex.split(describe)[1:] == DESCRIBE
  for bad in (["create", "--best-effort"], ["create", "--queued", "--spot", "--best-effort"]):
    result = _launch(TPU_VM, *bad, *BASE, "--dry-run", check=False)
    assert result.returncode and "--best-effort" in result.stderr


def test_waiting_gives_up_at_the_timeout_and_a_lost_request_is_an_error(fake_queue):
  result, calls = fake_queue({"queued_states": ["WAITING_FOR_RESOURCES"]}, "wait", *BASE,
                             "--poll_seconds", "0.05", "--wait_timeout", "0.2")
  assert result.returncode == 1 and len(calls) >= 2
  assert "error: queued resource st-test still WAITING_FOR_RESOURCES after" in result.stderr
  result, _ = fake_queue({"queued_states": ["FAILED"]}, "wait", *BASE, "--poll_seconds", "0")
  assert result.returncode == 1 and "error: queued resource st-test is FAILED" in result.stderr
  result, _ = fake_queue({"queued_states": ["NEW_STATE"]}, "wait", *BASE)
  assert result.returncode == 1 and "'NEW_STATE', which this launcher does not know" in (
      result.stderr)


def test_delete_queued_deletes_the_request_with_its_slice(fake_queue):
  result, calls = fake_queue({}, "delete", "--queued", *BASE)
  assert result.returncode == 0 and calls == [DELETE_QR]


@pytest.mark.parametrize("accelerator,version,partitioning", [
    ("v4-32", "tpu-ubuntu2204-base", []),
    ("v5litepod-16", "v2-alpha-tpuv5-lite", ["--gin_file=tpu/v5e.gin"]),
    ("v5p-32", "v2-alpha-tpuv5", ["--gin_file=tpu/v5p.gin"]),
    ("v6e-16", "v2-alpha-tpuv6e", []),
])
def test_accelerator_types_pick_runtime_version_and_partitioning(accelerator, version,
                                                                 partitioning):
  (create,) = _lines("create", *BASE, "--accelerator", accelerator, "--dry-run")
  assert f"--version={version}" in shlex.split(create)
  (line,) = _lines("run", *BASE, "--accelerator", accelerator,
                   "--gin_file=symbol_tuning_eval_flan_t5_xl.gin", *OVERRIDES, "--dry-run")
  assert _binary_argv(line) == _expected(["symbol_tuning_eval_flan_t5_xl.gin"])[:1] + [
      "--gin_file=symbol_tuning_eval_flan_t5_xl.gin", *partitioning, *OVERRIDES,
      "--alsologtostderr"]
  # Only after the Flan-T5 files, which define the macros the partitioning files select.
  (line,) = _lines("run", *BASE, "--accelerator", accelerator,
                   "--gin_file=symbol_tuning_bigbench_tiny.gin", "--dry-run")
  assert _binary_argv(line) == _expected(["symbol_tuning_bigbench_tiny.gin"], overrides=())
  for name in partitioning:  # the file exists in the checkout the workers get
    assert (REPO / "gin" / "t5x" / name.split("=", 1)[1]).is_file()


def test_unknown_accelerator_needs_a_version():
  result = _launch(TPU_VM, "create", *BASE, "--accelerator", "v3-8", "--dry-run", check=False)
  assert result.returncode and "unknown accelerator type 'v3-8'" in result.stderr
  (create,) = _lines("create", *BASE, "--accelerator", "v3-8", "--version", "tpu-vm-base",
                     "--dry-run")
  assert "--version=tpu-vm-base" in shlex.split(create)


def test_env_reaches_the_binary_on_the_worker(fake_cloud):
  value = "a b 'c' \"d\" $HOME `x` ;"
  (line,) = _lines("run", *BASE, "--env", "ENV_WORKERS=4", "--env", f"ENV_NOTE={value}",
                   "--gin_file=a.gin", "--dry-run")
  subprocess.run(["bash", "-c", line], env=fake_cloud["env"], check=True)
  assert json.loads(fake_cloud["argv"].read_text())["env"] == {"ENV_WORKERS": "4",
                                                               "ENV_NOTE": value}
  for bad in ("NOEQUALS", "1X=2", "A-B=1"):
    result = _launch(TPU_VM, "run", *BASE, "--env", bad, "--gin_file=a.gin", check=False)
    assert result.returncode and "--env takes KEY=VALUE" in result.stderr


def test_setup_installs_t5x_at_the_tests_snapshot():
  (line,) = _lines("setup", *BASE, "--repo_url", "https://x/y.git", "--dry-run")
  remote = _ssh_command(shlex.split(line)[1:])
  steps = remote.split("; ")
  checkouts = {s.split()[2]: s.split()[-1] for s in steps if s.startswith("git -C ")}
  vendor = settings.shared_dir() / "vendor" / "README.md"
  if not vendor.is_file():
    pytest.skip(f"no {vendor} to compare the pinned commits with")
  # The vendor README's table names each snapshot's commit by its first 12 hex digits.
  for name in ("t5x", "airio", "jestimator"):
    row = next(r for r in vendor.read_text().splitlines() if r.startswith(f"| {name}.tar.gz"))
    short = row.split("|")[3].strip()
    assert len(checkouts[name]) == 40 and checkouts[name].startswith(short), name
  assert "st-venv/bin/python -m pip install -q -e ./symbol-tuning" in steps
  assert ("st-venv/bin/python -m pip install -q --no-deps -e ./t5x ./airio ./jestimator"
          in steps)
  assert "st-venv/bin/python -m pip install -q -r symbol-tuning/tests/requirements-t5x.txt" in (
      steps)
  # jax[tpu] at the jax version the project's pins installed: libtpu, same jax.
  assert ("st-venv/bin/python -m pip install -q "
          "\"jax[tpu]==$(st-venv/bin/python -c 'import jax; print(jax.__version__)')\" "
          "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html") in remote
  assert remote.index("-e ./symbol-tuning") < remote.index("jax[tpu]") < remote.index(
      "--no-deps -e ./t5x")
  (line,) = _lines("setup", *BASE, "--repo_url", "u", "--t5x_ref", "v0.1", "--dry-run")
  assert "git -C t5x checkout -q v0.1" in _ssh_command(shlex.split(line)[1:])


def test_supervise_recreates_a_preempted_slice_and_reruns_the_same_command(fake_queue):
  plan = {"queued_states": ["WAITING_FOR_RESOURCES", "ACTIVE", "PREEMPTED", "ACTIVE"],
          "run_exits": [255, 0]}
  result, calls = fake_queue(plan, *SUPERVISE, "--delete")
  assert result.returncode == 0, result.stderr
  create = _create_qr("v5litepod-16", "v2-alpha-tpuv5-lite", "--spot")
  setup, run = calls[3], calls[4]
  assert calls == [create, DESCRIBE, DESCRIBE, setup, run,  # run 1: ssh fails (255)
                   DESCRIBE, DELETE_QR,                      # PREEMPTED: delete the request
                   create, DESCRIBE, setup, run,             # the same setup and run again
                   DELETE_QR]                                # --delete at the end
  assert "git -C t5x checkout -q cc342d419ec3" in _ssh_command(setup)
  remote = _ssh_command(run)
  assert "export ENV_WORKERS=4" in remote and "--gin_file=tpu/v5e.gin" in remote
  assert "requesting st-test again (1 of 5)" in result.stderr


def test_supervise_does_not_retry_a_failure_of_the_job(fake_queue):
  plan = {"queued_states": ["ACTIVE"], "node_states": ["READY"], "run_exits": [3]}
  result, calls = fake_queue(plan, *SUPERVISE)
  assert result.returncode == 3
  create = _create_qr("v5litepod-16", "v2-alpha-tpuv5-lite", "--spot")
  assert calls == [create, DESCRIBE, calls[2], calls[3], DESCRIBE, NODE_DESCRIBE]
  assert " -m t5x.train " in _ssh_command(calls[3])
  assert "still ACTIVE: a failure of the job, not a preemption; not retried" in result.stderr
  # A preempted node under a request that still reads ACTIVE is a preemption.
  plan = {"queued_states": ["ACTIVE"], "node_states": ["PREEMPTED", "READY"],
          "run_exits": [255, 0]}
  result, calls = fake_queue(plan, *SUPERVISE)
  assert result.returncode == 0 and calls.count(DELETE_QR) == 1


def test_supervise_gives_up_after_max_retries(fake_queue):
  plan = {"queued_states": ["ACTIVE", "SUSPENDED"], "run_exits": [255]}
  # The first wait sees ACTIVE; after that every state is SUSPENDED (the request is lost
  # while waiting, too).
  result, calls = fake_queue(plan, *SUPERVISE, "--max_retries", "2")
  assert result.returncode == 1
  create = _create_qr("v5litepod-16", "v2-alpha-tpuv5-lite", "--spot")
  assert calls[:2] == [create, DESCRIBE] and calls[4:] == [
      DESCRIBE, DELETE_QR, create, DESCRIBE, DELETE_QR, create, DESCRIBE, DELETE_QR]
  assert ("error: slice st-test was lost 3 time(s) and --max_retries is 2: giving up"
          in result.stderr)
  assert result.stderr.count("\n") < 40 and "Traceback" not in result.stderr


def test_supervise_refusals():
  for extra, message in (
      (["--gin.MODEL_DIR='/tmp/run'"], "--gin.MODEL_DIR"),   # a local MODEL_DIR is lost
      (["--detach"], "no --detach"),
      (["--max_retries", "-1"], "--max_retries"),
  ):
    args = [a for a in SUPERVISE if not (extra[0].startswith("--gin.") and a == MODEL_DIR)]
    result = _launch(TPU_VM, *args, *extra, "--dry-run", check=False)
    assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
  # An evaluation has no MODEL_DIR to resume from: it is simply run again.
  args = [a for a in SUPERVISE if a != MODEL_DIR]
  assert len(_lines(*args, "--binary", "eval", "--dry-run")) == 4


def test_supervise_dry_run_prints_one_attempt():
  lines = _lines(*SUPERVISE, "--delete", "--dry-run")
  kinds = [shlex.split(line)[3:5] for line in lines]
  assert kinds == [["queued-resources", "create"], ["queued-resources", "describe"],
                   ["tpu-vm", "ssh"], ["tpu-vm", "ssh"], ["queued-resources", "delete"]]


def test_up_queued_requests_waits_and_deletes_the_request():
  lines = _lines("up", "--queued", "--spot", *BASE, "--accelerator", "v5p-32", "--repo_url",
                 "https://x/y.git", "--gin_file=symbol_tuning_flan_t5_xxl.gin", "--delete",
                 "--dry-run")
  calls = [shlex.split(line)[1:] for line in lines]
  assert calls[0] == _create_qr("v5p-32", "v2-alpha-tpuv5", "--spot")
  assert calls[1] == DESCRIBE and calls[-1] == DELETE_QR
  assert [c[:4] for c in calls[2:-1]] == [["compute", "tpus", "tpu-vm", "ssh"]] * 2
  assert _binary_argv(lines[-2]) == _expected(
      ["symbol_tuning_flan_t5_xxl.gin", "tpu/v5p.gin"], overrides=())


def test_a_gcloud_error_while_waiting_is_one_line(fake_queue):
  error = ("ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: "
           "Resource 'st-test' was not found")
  result, calls = fake_queue({"describe_error": error}, "wait", *BASE)
  assert result.returncode == 1 and calls == [DESCRIBE]
  assert result.stderr.splitlines()[-1] == (
      "error: gcloud compute tpus queued-resources describe st-test failed with exit status 1: "
      + error)
  # In supervise, the same error still deletes the slice when --delete asks for it.
  result, calls = fake_queue({"describe_error": error}, *SUPERVISE, "--delete")
  assert result.returncode == 1 and calls[-1] == DELETE_QR and "Traceback" not in result.stderr


def test_readme_cloud_tpu_block_runs_against_fake_gcloud(tmp_path):
  """README's Cloud TPU block as written, in `bash -eu` from the repo root, with fake
  `gcloud` and `gsutil` that record their arguments: every step reaches gcloud on all
  workers, in order, with the block's names, and the results loop prints what gsutil lists."""
  block = readme_support.block("Cloud TPU", 0)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls.jsonl"
  metrics = "gs://my-bucket/symbol_tuning/flan_t5_xl/eval/symbols/inference_eval/t-metrics.jsonl"
  for tool in ("gcloud", "gsutil"):
    (bin_dir / tool).write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(calls)!r}, 'a') as f:
          f.write(json.dumps([{tool!r}] + sys.argv[1:]) + '\\n')
        if sys.argv[1:2] == ['ls']:
          print({metrics!r})
        elif sys.argv[1:2] == ['cat']:
          print('{{"step": 1142000}}')
        """))
    (bin_dir / tool).chmod(0o755)
  # The block says `python`: this interpreter's (venv) bin folder comes right after the fakes.
  path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])
  env = dict(os.environ, PATH=path, TMPDIR=str(tmp_path))
  result = subprocess.run(["bash", "-euc", block.text], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines()[-2:] == [metrics, '{"step": 1142000}']
  recorded = [json.loads(line) for line in calls.read_text().splitlines()]
  gcloud = [c for c in recorded if c[0] == "gcloud"]
  assert gcloud[0][1:5] == ["compute", "tpus", "tpu-vm", "create"] and "st-xl" in gcloud[0]
  assert gcloud[-1][1:5] == ["compute", "tpus", "tpu-vm", "delete"]
  ssh = [c for c in gcloud if c[4] == "ssh"]
  assert ssh and all("--worker=all" in c and "--zone=us-central2-b" in " ".join(c) or
                     "us-central2-b" in c for c in ssh)
  evals = [c for c in ssh if "t5x.eval" in " ".join(c)]
  assert len(evals) == 5  # one per setting
  assert [c[1] for c in recorded if c[0] == "gsutil"] == ["ls", "cat"]


def test_readme_queued_resources_block_runs_against_fake_gcloud(fake_queue):
  """README's queued-resources block as written (its NAME / ZONE / BUCKET from the block
  before it): the request, the wait, setup, the run with --env, delete, then supervise through
  one preemption to the end, each reaching gcloud with the block's names."""
  block = readme_support.block("Cloud TPU", 3)
  # The run under supervise fails once on a slice whose node reads PREEMPTED.
  plan = {"queued_states": ["ACTIVE"], "node_states": ["PREEMPTED"], "run_exits": [0, 1, 0]}
  result, calls = fake_queue.bash(plan, block.text, NAME="st-test", ZONE="us-central2-b",
                                  BUCKET="gs://bucket/symbol_tuning")
  assert result.returncode == 0, result.stderr[-3000:]
  create = _create_qr("v5litepod-16", "v2-alpha-tpuv5-lite", "--spot")
  assert calls.count(create) == 3  # create --queued, supervise's first request, its second
  assert calls.count(DELETE_QR) == 3  # delete --queued, after the preemption, --delete
  runs = [_ssh_command(c) for c in calls if "ssh" in c and " -m t5x." in " ".join(c)]
  assert len(runs) == 3 and len(set(runs)) == 1  # the same command after the preemption
  assert "SYMBOL_TUNING_PROMPT_WORKERS=4" in runs[0]
  assert "gs://bucket/symbol_tuning/flan_t5_xl" in runs[0]
  assert "supervise: slice st-test is PREEMPTED" in result.stderr
