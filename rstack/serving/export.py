"""``rstack export RUN --layout seed OUT``: a run in the layout the seed's own loading code reads.

The seed's users load ``models/level0_batch_0``, ``models/level1_model`` and ``models/level2_model``
with ``RandomForestClassificationModel.load`` and ``LogisticRegressionModel.load``: bare Spark ML
models, not rstack's PipelineModels (assembler + model). This writes, under ``OUT``:

- ``models/level0_batch_<i>``, ``models/level1_model``, ``models/level2_model``: the bare models;
- ``models/assemblers/<name>``: each model's VectorAssembler as its own PipelineModel;
- ``models/features.json``: per model, its input columns in order, the column its class-1
  probability feeds (``l0_batch_000``, ``l1``, ``l2``) and where the assembler is.

Only Spark ML models can be written so: a run whose models are another library's (xgboost's) is
refused before Spark starts. ``OUT`` is built beside itself and renamed into place, whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rstack._io import write_json_atomic
from rstack.errors import InputError
from rstack.models.bundle import Bundle
from rstack.models.meta import L1_COL, L2_COL

if TYPE_CHECKING:
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.util import JavaMLWritable
    from pyspark.sql import SparkSession

LAYOUTS = ("seed",)
SPARK_ML = "org.apache.spark.ml."


def seed_names(bundle: Bundle) -> dict[str, str]:
    """rstack's model names (``batch_003``, ``level1``, ``level2``) to the seed's folder names."""
    names = {b: f"level0_batch_{int(b.rsplit('_', 1)[1])}" for b in bundle.level0_names}
    return {**names, "level1": "level1_model", "level2": "level2_model"}


def _stage_class(model_dir: Path) -> str:
    """The class of a saved PipelineModel's last stage, from its metadata (no Spark needed)."""
    stages = sorted((model_dir / "stages").iterdir(), key=lambda p: int(p.name.split("_", 1)[0]))
    meta = next((stages[-1] / "metadata").glob("part-*"))
    return str(json.loads(meta.read_text().splitlines()[0])["class"])


def check_exportable(run_dir: Path, layout: str, out: Path) -> Bundle:
    """The run's bundle if it can be written in ``layout`` at ``out``; otherwise an InputError that says why."""
    if Path(out).exists():
        raise InputError(f"{out} exists; pass another OUT or remove it")
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout!r} is not one rstack writes; use one of {', '.join(LAYOUTS)}")
    bundle = Bundle.open(run_dir)
    models = bundle.manifest["models"]
    for name in [*bundle.level0_names, "level1", "level2"]:
        rel = models["level0"].get(name) or models[name]
        kind = _stage_class(bundle.run_dir / rel)
        if not kind.startswith(SPARK_ML):
            raise InputError(
                f"{bundle.run_dir / rel}: {name} is a {kind}, not a Spark ML model, so the seed's loaders cannot "
                "read it; export a run trained with level0.learner: random_forest"
            )
    return bundle


def export_seed(spark: SparkSession, state: dict[str, Any], run_dir: str, out: str) -> dict[str, Any]:
    """Write ``run_dir`` in the seed's layout at ``out`` (the host-function signature); returns the
    features.json it wrote."""
    target = Path(out)
    bundle = check_exportable(Path(run_dir), "seed", target)
    work = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        index = _write_models(bundle, work / "models")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return index


def _write_models(bundle: Bundle, models: Path) -> dict[str, Any]:
    from pyspark.ml import PipelineModel

    index: dict[str, Any] = {
        "run_id": bundle.manifest["run_id"],
        # Level 0's inputs are rstack's features: rstack.load(RUN).featurize(klines) computes them.
        "features": bundle.features,
        "probability": "probability[1]",
        "models": {},
    }
    for name, seed_name in seed_names(bundle).items():
        pipeline = bundle.model(name)
        # Every level is saved as (VectorAssembler, a Spark ML model): estimators.assembled.
        assembler = cast("VectorAssembler", pipeline.stages[0])
        model = cast("JavaMLWritable", pipeline.stages[-1])
        model.write().save(str(models / seed_name))
        PipelineModel(stages=[assembler]).write().save(str(models / "assemblers" / seed_name))
        index["models"][seed_name] = {
            "class": type(model).__name__,
            "inputs": list(assembler.getInputCols()),
            "assembler": f"assemblers/{seed_name}",
            # The column the next level reads this model's class-1 probability from.
            "output": {"level1": L1_COL, "level2": L2_COL}.get(name, f"l0_{name}"),
        }
    write_json_atomic(models / "features.json", index)
    return index
