"""notebooks/inspect_mixtures.ipynb: saved with its outputs, and it runs top to bottom,
offline, with every code cell showing something."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "inspect_mixtures.ipynb"
# What each part of the notebook prints (section order).
EXPECTED_TEXT = ("symbol_tuning:", "vocabulary: local (8000 ids)",
                 "prompts of symbol_tuning_bigbench (train) from 18 tasks", "symbol map:",
                 "--- query", "targets: ", "largest gap:",
                 "feature: decoder_loss_weights", "--- segment 1:",
                 "symbol_tuning_bigbench_mix_16pct:", "symbol_tuning_eval_bigbench_flipped:",
                 "=== flipped:")


def check_outputs(nb) -> None:
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  silent = [i for i, cell in enumerate(code) if not cell.outputs]
  assert not silent, f"code cells without output: {silent}"
  outputs = [out for cell in code for out in cell.outputs]
  assert not [out for out in outputs if out.output_type == "error"]
  images = [out for out in outputs
            if out.output_type == "display_data" and "image/png" in out.get("data", {})]
  assert len(images) >= 3  # the distributions, the mixing rates, the mixes
  text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
  positions = [text.find(expected) for expected in EXPECTED_TEXT]
  assert -1 not in positions, [e for e, p in zip(EXPECTED_TEXT, positions) if p == -1]
  assert positions == sorted(positions)


def test_saved_notebook_shows_its_outputs():
  """Where the notebook is hosted it is read, not run: the saved copy carries every output."""
  check_outputs(nbformat.read(NOTEBOOK, as_version=4))


def test_notebook_executes_offline(bigbench_dir):
  del bigbench_dir  # extracted before the kernel starts
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      cell.outputs = []
  # The "python3" kernel is started with this interpreter (jupyter_client maps its "python"
  # to sys.executable), in the notebook's folder, with this process's environment (conftest:
  # SYMBOL_TUNING_VOCAB=local).
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  check_outputs(nb)
