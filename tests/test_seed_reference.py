"""The frozen yardstick (scripts/seed_reference.py): it runs on a tiny set and owes rstack nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from rstack.data.synth import write_synthetic
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "seed_reference.py"


def test_the_reference_imports_nothing_from_rstack() -> None:
    # Frozen means: rstack can change under it without changing what the yardstick measures.
    tree = ast.parse(SCRIPT.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if n.split(".")[0] == "rstack"], names


def test_the_reference_runs_on_a_tiny_set_and_saves_the_seed_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic(data, symbols=3, rows=400, seed=3, interval="1h")
    out, models = tmp_path / "result.json", tmp_path / "models"
    cmd = [sys.executable, str(SCRIPT), str(data), "--batch-size", "2", "--out", str(out), "--models", str(models)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["batches"] == 2 and len(result["symbols"]) == 3 and result["input_rows"] == 1200
    stages = ("startup", "features", "level0", "level1_level2", "evaluate", "save", "total")
    assert all(result["timings"][s] >= 0 for s in stages)
    assert sum(result["timings"][s] for s in stages[:-1]) <= result["timings"]["total"]
    assert 0.5 <= result["metrics"]["level2"]["roc_auc"] <= 1.0
    # The seed's own layout: bare Spark ML models its three loading lines open.
    saved = {p.name for p in models.iterdir()}
    assert saved == {"level0_batch_0", "level0_batch_1", "level1_model", "level2_model"}
    assert "RandomForestClassificationModel" in (models / "level0_batch_0" / "metadata" / "part-00000").read_text()
    assert "LogisticRegressionModel" in (models / "level2_model" / "metadata" / "part-00000").read_text()
