"""Both notebooks execute top to bottom (small configuration) and are saved without outputs."""

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# run after a notebook, in its kernel: its numbers are the ones the report shows
CHECKS = {
    "label_leakage.ipynb": """
import json
from nopeek.eval import label_leak
for r in records:
    for attack in ("norm", "direction"):
        with open(os.path.join(r["run"], "attacks", f"{attack}.json")) as f:
            saved = json.load(f)  # the attack's row, as sweeps and the report read it
        worst = max(max(a, 1 - a) for a in saved["auc_per_epoch"] if a is not None)
        assert r[attack] == label_leak(saved), (r[attack], label_leak(saved))
        assert abs(r[attack] - worst) < 1e-12, (r[attack], worst)  # the worst epoch, not the last
""",
}


@pytest.mark.parametrize("name", ["privacy_utility_tradeoff.ipynb", "label_leakage.ipynb"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "saved with outputs"
    if name in CHECKS:
        nb.cells.append(nbformat.v4.new_code_cell(CHECKS[name]))
    # the kernel must be this interpreter (the venv's), where nopeek is installed
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    monkeypatch.setenv("NOPEEK_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("NOPEEK_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={
        "metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # raises CellExecutionError on any failing cell
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert Path(printed.strip()).resolve() == Path(sys.executable).resolve()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]  # fmt: skip
    assert images, "no figure was drawn"
