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
