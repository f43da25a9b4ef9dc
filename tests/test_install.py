"""The package keeps torch out of its processes.

TensorFlow (which seqio loads) and torch's PyPI build (CUDA, with triton) kill Python with a
segmentation fault when both are imported in one process, so the library never imports
torch or transformers, and tests reach them only through tests/hf_reference.py.
"""
import importlib
import pkgutil
import sys

import symbol_tuning


def test_library_never_imports_torch():
  for module in pkgutil.walk_packages(symbol_tuning.__path__, "symbol_tuning."):
    importlib.import_module(module.name)
  assert "tensorflow" in sys.modules  # loaded through seqio: torch must stay away
  loaded = sorted(name for name in sys.modules
                  if name.split(".")[0] in ("torch", "transformers", "triton"))
  assert not loaded, loaded


def test_wheel_carries_the_data_the_library_reads(tmp_path):
  """A non-editable install has the BIG-bench archive (with its notice), the local
  vocabulary and the gin / catalogue files: the Quick start needs nothing else."""
  import pathlib  # pylint: disable=import-outside-toplevel
  import runpy  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import zipfile  # pylint: disable=import-outside-toplevel

  # Built from a copy of the files git would commit (what `tpu_vm.py setup` ships):
  # setuptools writes build/ and *.egg-info into the folder it builds, and other tests read
  # the checkout meanwhile (test_launch packs it).
  repo = pathlib.Path(__file__).resolve().parent.parent
  source_files = runpy.run_path(str(repo / "launch" / "pack_source.py"))["source_files"]
  source = tmp_path / "source"
  for name in source_files(repo):
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(repo / name, source / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=600)
  (wheel,) = tmp_path.glob("symbol_tuning-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  for name in ("symbol_tuning/assets/bigbench_tasks.tar.xz",
               "symbol_tuning/assets/BIGBENCH_NOTICE.md", "symbol_tuning/assets/local_spm_8k.model",
               "symbol_tuning/_data/tasks/bigbench.json",
               "symbol_tuning/_data/gin/local/symbol_tuning_bigbench_tiny.gin"):
    assert name in names, name
