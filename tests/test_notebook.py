"""notebooks/inspect_mixtures.ipynb runs top to bottom, offline, and draws its plots."""
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "inspect_mixtures.ipynb"


def test_notebook_executes_and_plots(bigbench_dir):
  del bigbench_dir  # the fixture fails clearly when the offline BIG-bench copy is missing
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # The "python3" kernel is started with this interpreter (jupyter_client maps its "python"
  # to sys.executable), in the notebook's folder, with this process's environment.
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # raises CellExecutionError on the first failing cell

  outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
  assert not [out for out in outputs if out.output_type == "error"]
  images = [out for out in outputs
            if out.output_type == "display_data" and "image/png" in out.get("data", {})]
  assert len(images) >= 2  # the distributions and the mixing rates
  text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
  assert "500 prompts of symbol_tuning_bigbench" in text
  assert "symbol map:" in text and "--- query" in text
