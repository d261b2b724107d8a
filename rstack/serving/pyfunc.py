"""The stack as one MLflow pyfunc model: the run folder is its artifact, scoring is the bundle's own.

A pyfunc wrapper rather than MLflow's Spark flavour: a run is three levels of PipelineModels behind
per-symbol Window features, which no single PipelineModel expresses. ``predict`` takes klines as a
pandas DataFrame (symbol, open_time ms, open, high, low, close, volume) and returns what
``rstack predict`` writes for them, sorted by (symbol, open_time). It runs Spark jobs, so it needs
a running SparkSession (e.g. inside rstack's Runtime); it does not start one behind the caller's back.
Imported only where MLflow is used (the extra ``rstack[mlflow]``). The model names rstack as its
dependency, so loading it needs rstack installed (``mlflow models serve`` cannot build that environment
from PyPI).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from rstack._io import KEY, MANIFEST, load_manifest
from rstack.errors import InputError
from rstack.models.bundle import Bundle

ARTIFACT = "run"
MODEL_NAME = "stack"


class StackModel(PythonModel):
    def load_context(self, context: Any) -> None:
        # Opening verifies the format, the Spark version and every model file's sha256.
        self.bundle = Bundle.open(context.artifacts[ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Klines in, every level's probability out; ``params`` is MLflow's and unused (the model logs no
        params schema, so MLflow passes none): the class threshold is the run's own."""
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        from rstack.models.convert import to_spark

        if SparkContext._active_spark_context is None:
            raise InputError(
                "the rstack stack scores with Spark and no SparkSession is running in this process; call it "
                "inside one (e.g. a function run by rstack's Runtime, or after SparkSession.builder.getOrCreate())"
            )
        spark = SparkSession.builder.getOrCreate()  # the running session
        scored = self.bundle.predict(to_spark(spark, model_input))  # the run's own threshold
        return scored.orderBy(*KEY).toPandas()


def log_stack(mlflow: Any, run_dir: Path, register: str | None) -> int | None:
    """Log the run's bundle (manifest and model folders; not its predictions or checkpoints, which can be
    gigabytes) as the active MLflow run's ``stack`` model; returns the registered version, if registered."""
    with tempfile.TemporaryDirectory(prefix="rstack-mlflow-") as tmp:
        staged = Path(tmp) / run_dir.name
        staged.mkdir()
        shutil.copy2(run_dir / MANIFEST, staged / MANIFEST)
        for rel in Bundle.model_dirs(load_manifest(run_dir)):
            shutil.copytree(run_dir / rel, staged / rel)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=StackModel(),
            artifacts={ARTIFACT: str(staged)},
            registered_model_name=register,
        )
    version = getattr(info, "registered_model_version", None)
    return int(version) if version is not None else None
