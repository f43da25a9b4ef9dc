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
import textwrap

import pytest

import readme_support

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
                   'data': os.environ.get('SYMBOL_TUNING_DATA_DIR')}}, f)
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
