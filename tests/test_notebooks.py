"""The notebooks run top to bottom in small mode with random weights, as CI runs them, and learn.

Each runs in a fresh kernel in a temporary folder (the data it generates goes there); a cell
appended here prints the figures the notebook computed, which are checked against baselines.
"""
import glob
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# what each notebook must reach in small mode, from random weights, on held-out generated data
CHECKS = {
    "02_transfer_learning_classification": ("{'accuracy': val_accuracy, 'chance': 1 / len(class_names)}", 0.25),
    "03_segmentation": ("{'miou': miou, 'baseline': baseline.miou}", 0.25),
    "04_detection_model_garden": ("{'ap': ap}", None),
}


def test_there_are_four_notebooks_that_import_only_the_public_api():
    assert [os.path.basename(p) for p in NOTEBOOKS] == [
        "01_multiscale_features.ipynb", "02_transfer_learning_classification.ipynb", "03_segmentation.ipynb",
        "04_detection_model_garden.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "CONVNEXT_TF_WEIGHTS" in code and "CONVNEXT_TF_SMALL" in code
        assert "def " not in code and "class " not in code, f"{path} defines glue code that belongs in the library"
        for line in code.splitlines():
            if line.startswith(("import ", "from ")) and "convnext_tf" in line:
                assert "._" not in line and "tests" not in line, line
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "random weights, small mode" in text  # the notebook says which mode its stored outputs come from


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p)[:2])
def test_notebook_runs_in_small_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNEXT_TF_SMALL", "1")
    monkeypatch.setenv("CONVNEXT_TF_WEIGHTS", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    name = os.path.splitext(os.path.basename(path))[0]
    nb = nbformat.read(path, as_version=4)
    check = CHECKS.get(name)
    if check:
        nb.cells.append(nbformat.v4.new_code_cell(f"import json; print('RESULT', json.dumps({check[0]}))"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "weights: random; small mode: True" in nb.cells[2].outputs[0].text
    if check:
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        result = json.loads(text.split("RESULT", 1)[1])
        if name.startswith("02"):
            assert result["accuracy"] > result["chance"] + check[1], result
        elif name.startswith("03"):
            assert result["miou"] > result["baseline"] + check[1], result
        else:
            assert 0.0 <= result["ap"] <= 1.0, result  # a real COCO evaluation ran (AP of a 60-step run is small)
