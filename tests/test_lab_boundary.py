"""Serving apart from training (issue 22): nothing that scores images imports the training lab.

The lab is fer_core.lab plus its two entry points, ``python -m fer_core.train`` and ``python -m fer_core.evaluate``.
A shipped model is a .keras file of stock Keras layers and its spec.json: loading and serving it must work
with the lab absent from sys.modules.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = re.compile(r"^fer_core\.(lab|train|evaluate)(\.|$)")
ENTRY_POINTS = {REPO / "fer_core" / "train.py", REPO / "fer_core" / "evaluate.py"}


def _serving_files() -> list[Path]:
    """Every module of fer_core outside the lab, and every module of jobs/ and dashboards/."""
    files = [p for p in sorted((REPO / "fer_core").rglob("*.py"))
             if p.relative_to(REPO / "fer_core").parts[0] != "lab" and p not in ENTRY_POINTS]
    return files + sorted((REPO / "jobs").rglob("*.py")) + sorted((REPO / "dashboards").rglob("*.py"))


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).parts[:-1])


def _lab_references(path: Path, package: str) -> list[str]:
    """Imports (top-level or inside functions) and module-name strings (lazy export tables) that name the lab;
    `package` resolves relative imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        found += [f"{path.name}:{node.lineno}: {name}" for name in names if LAB.match(name)]
    return found


def test_no_serving_job_or_dashboard_module_names_the_lab():
    files = _serving_files()
    assert any(p.name == "pipeline.py" for p in files) and any(p.parts[-2:] == ("campaign", "scoring.py") for p in files)
    offending = [f"{_package_of(path)}/{ref}" for path in files for ref in _lab_references(path, _package_of(path))]
    assert not offending, offending


def test_the_reference_check_sees_a_lazy_import_of_the_lab(tmp_path):
    """The check above would catch the lab imported inside a function, relatively or by name in a table."""
    probe = tmp_path / "probe.py"
    probe.write_text("from . import registry\n\ndef f():\n    from ..lab import loop\n    from fer_core.train import main\n"
                     "EXPORTS = {'x': 'fer_core.lab.metrics', 'y': 'fer_core.labels'}\n")
    refs = _lab_references(probe, "fer_core.models")
    assert [r.split(": ", 1)[1] for r in refs] == ["fer_core.lab", "fer_core.lab.loop", "fer_core.train",
                                                    "fer_core.train.main", "fer_core.lab.metrics"]


def test_serving_loads_and_scores_with_the_shipped_model_without_the_lab(tmp_path):
    """A fresh interpreter: `predict` through the CLI and the default shipped model, the local page's module,
    the URI fetcher and the Spark-free pipeline; afterwards no lab module has been imported."""
    from _images import astronaut
    from PIL import Image

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    code = f"""
import contextlib, io, json, re, sys
import numpy as np
import fer_core.pipeline, fer_core.serve, fer_core.fetch, fer_core.decode, fer_core.detectors, fer_core.report
from fer_core.cli import main
from fer_core.models.registry import create_emotion_model

model = create_emotion_model("default")
probs = model.predict(np.full((2, 48, 48), 128, np.uint8))
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["predict", {str(photo)!r}, "--detector", "haar", "--json"])
lab = sorted(m for m in sys.modules if re.match({LAB.pattern!r}, m))
print(json.dumps({{"rc": rc, "version": model.version, "shape": list(probs.shape), "sums": probs.sum(1).tolist(),
                   "doc": json.loads(out.getvalue()), "lab": lab}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["lab"] == []
    assert got["version"].startswith("fer-vgg@") and got["shape"] == [2, 7]
    assert all(abs(s - 1.0) < 1e-4 for s in got["sums"])
    assert got["rc"] == 0 and len(got["doc"]) == 1 and got["doc"][0]["status"] in ("ok", "no_face")


def test_the_lab_entry_points_keep_their_names():
    """`python -m fer_core.train` and `python -m fer_core.evaluate` still answer (Makefile, README, model cards)."""
    for module, usage in (("fer_core.train", "usage: python -m fer_core.train"),
                          ("fer_core.evaluate", "usage: python -m fer_core.evaluate")):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith(usage), proc.stderr[-2000:]
