"""``rstack export --layout seed``: the seed's own three loading lines read the exported models, and
chaining them through the exported assemblers predicts what ``rstack predict`` does, to 1e-9."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack._io import write_manifest
from rstack.cli.app import app
from rstack.data.discover import discover
from rstack.errors import InputError
from rstack.models.bundle import Bundle, model_checksums
from rstack.serving.export import check_exportable
from rstack.serving.predict import predict_dir
from rstack.training.driver import TrainResult

pytestmark = pytest.mark.slow


def _seed_predict(spark: Any, state: dict, out: str, run_dir: str, data_dir: str) -> pd.DataFrame:
    """The seed's users' path: its three loaders, then each level by hand through features.json."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegressionModel, RandomForestClassificationModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    import rstack
    from rstack.data.discover import read_klines

    # The seed's own lines, verbatim but for the folder they are run from.
    level0_model = RandomForestClassificationModel.load(f"{out}/models/level0_batch_0")
    level1_model = RandomForestClassificationModel.load(f"{out}/models/level1_model")
    level2_model = LogisticRegressionModel.load(f"{out}/models/level2_model")

    index = json.loads(Path(out, "models", "features.json").read_text())
    loaded: dict[str, Any] = {
        "level0_batch_0": level0_model,
        "level1_model": level1_model,
        "level2_model": level2_model,
    }
    feats = rstack.load(run_dir).featurize(read_klines(spark, discover(Path(data_dir))))
    df = feats.where(F.col("_status") == "ok").select("symbol", "open_time", *index["features"])
    outputs = []
    for name, entry in index["models"].items():  # Level 0's batches, then level1_model, then level2_model
        model = loaded.get(name) or RandomForestClassificationModel.load(f"{out}/models/{name}")
        assembled = PipelineModel.load(f"{out}/models/{entry['assembler']}").transform(df)
        scored = model.transform(assembled)
        df = scored.select(*df.columns, vector_to_array(F.col("probability"))[1].alias(entry["output"]))
        outputs.append(entry["output"])
    return df.select("symbol", "open_time", *outputs).toPandas()


def test_seed_loaders_read_the_export_and_predict_as_rstack_does(
    trained: TrainResult, synth_dir: Path, tmp_path: Path, on_host: Callable[..., Any]
) -> None:
    out = tmp_path / "seed"
    result = CliRunner().invoke(app, ["export", str(trained.run_dir), str(out), "--layout", "seed"])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "models" / "features.json").read_text())
    names = list(index["models"])
    assert names[:1] == ["level0_batch_0"] and names[-2:] == ["level1_model", "level2_model"]
    l0_cols = [f"l0_batch_{i:03d}" for i in range(len(names) - 2)]
    assert index["models"]["level1_model"]["inputs"][: len(l0_cols)] == l0_cols
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]  # no temporary folder left

    # Two of the symbols are enough to compare every model's output.
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(synth_dir.glob("*.parquet"))[:2]:
        shutil.copy2(path, data / path.name)
    seed = on_host(_seed_predict, str(out), str(trained.run_dir), str(data))
    on_host(predict_dir, str(trained.run_dir), discover(data), str(tmp_path / "p.parquet"), None)
    ours = pd.read_parquet(tmp_path / "p.parquet")
    both = ours.merge(seed, on=["symbol", "open_time"], suffixes=("", "_seed"))
    assert len(both) == len(ours) == len(seed)
    for col in [*l0_cols, "l1", "l2"]:
        np.testing.assert_allclose(both[f"{col}_seed"], both[col], rtol=0, atol=1e-9, err_msg=col)


def _not_spark_ml(run: Path) -> None:
    """A run whose first Level-0 model is another library's (as an xgboost_rf run's is), checksums kept valid."""
    meta_file = next((run / "level0" / "batch_000" / "stages").glob("1_*/metadata/part-00000"))
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "class": "xgboost.spark.core.SparkXGBClassifierModel"}))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["checksums"] = model_checksums(run, Bundle.model_dirs(manifest))
    write_manifest(run, manifest)


@pytest.mark.parametrize(
    ("layout", "change", "match"),
    [
        ("mlflow", None, r"--layout 'mlflow' is not one rstack writes; use one of seed"),
        ("seed", "exists", r"exists; pass another OUT or remove it"),
        ("seed", "xgboost", r"batch_000 is a xgboost\.spark\.core\.SparkXGBClassifierModel, not a Spark ML model"),
    ],
)
def test_export_refuses_what_the_seed_layout_cannot_hold(
    trained: TrainResult, tmp_path: Path, layout: str, change: str | None, match: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run)
    out = tmp_path / "out"
    if change == "exists":
        out.mkdir()
    elif change == "xgboost":
        _not_spark_ml(run)
    with pytest.raises(InputError, match=match):
        check_exportable(run, layout, out)
