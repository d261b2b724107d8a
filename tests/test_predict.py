"""Batch and streaming inference from a saved run, through the same scoring path as training."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import rstack
from rstack.cli.app import app
from rstack.cluster.runtime import Runtime
from rstack.data.discover import discover, read_klines
from rstack.errors import InputError
from rstack.faults import ENV
from rstack.models.bundle import Bundle
from rstack.serving.predict import predict_dir
from rstack.serving.stream import stream_dir
from rstack.training.driver import TrainResult
from tests.conftest import LIGHT_TREES, light_config, set_host_env
from tests.test_prepare import expected_warmup

pytestmark = pytest.mark.slow
PROB_COLS = ["l0_batch_000", "l0_batch_001", "l1", "l2"]


def test_cli_predict_reproduces_training_probabilities(trained: TrainResult, synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    # A symbol the models never saw has no volatility scale: counted and named, not scored.
    pd.read_parquet(synth_dir / "SYN000USDT.parquet").assign(symbol="NEWUSDT").to_parquet(data / "NEWUSDT.parquet")
    out = tmp_path / "preds.parquet"
    result = CliRunner().invoke(
        app, ["predict", str(data), "--run", str(trained.run_dir), "--out", str(out), "--no-dashboard"]
    )
    assert result.exit_code == 0, result.output
    assert "NEWUSDT" in result.output and "unknown at training time: no volatility scale, 1500" in result.output
    preds = pd.read_parquet(out)
    recorded = pd.read_parquet(trained.run_dir / "predictions" / "test.parquet")
    both = recorded.merge(preds, on=["symbol", "open_time"], suffixes=("_train", "_pred"))
    assert len(both) == len(recorded)  # every test row was predicted
    for col in PROB_COLS:
        np.testing.assert_allclose(both[f"{col}_pred"], both[f"{col}_train"], rtol=0, atol=1e-9, err_msg=col)
    assert (preds["predicted"] == (preds["l2"] >= 0.5).astype(int)).all()
    assert "NEWUSDT" not in set(preds["symbol"]) and preds["known_symbol"].all()
    # Warm-up rows are reported per symbol, not silently dropped: the rows before the week-long
    # windows are filled, counted as training counts them.
    w = expected_warmup(pd.read_parquet(synth_dir / "SYN000USDT.parquet"), light_config())
    assert (preds.groupby("symbol").size() == 1500 - w).all()
    assert f"{1500 - w:>9}{w:>9}{0:>9}" in result.output


def _api_predict(spark: Any, state: dict, run_dir: str, data_dir: str) -> tuple[pd.DataFrame, int]:
    from pyspark.ml.classification import LogisticRegressionModel, RandomForestClassificationModel

    bundle = rstack.load(run_dir)
    frame = bundle.predict(read_klines(spark, discover(Path(data_dir)))).toPandas()
    # The seed's own loaders still work on the saved stages.
    rf = RandomForestClassificationModel.load(glob.glob(f"{run_dir}/level0/batch_000/stages/1_*")[0])
    LogisticRegressionModel.load(glob.glob(f"{run_dir}/level2/stages/1_*")[0])
    return frame, rf.getNumTrees


def test_python_api_and_seed_loaders(
    trained: TrainResult, synth_dir: Path, tmp_path: Path, on_host: Callable[..., Any]
) -> None:
    frame, trees = on_host(_api_predict, str(trained.run_dir), str(synth_dir))
    assert trees == LIGHT_TREES
    summary = on_host(predict_dir, str(trained.run_dir), discover(synth_dir), str(tmp_path / "p.parquet"), None)
    batch = pd.read_parquet(tmp_path / "p.parquet")
    frame = frame.sort_values(["symbol", "open_time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        frame[["symbol", "open_time", *PROB_COLS]], batch[["symbol", "open_time", *PROB_COLS]]
    )
    w = expected_warmup(pd.read_parquet(synth_dir / "SYN000USDT.parquet"), light_config())
    assert summary["warmup_rows"] == 6 * w and summary["invalid_rows"] == 0


def _tamper(run: Path, how: str) -> None:
    manifest_path = run / "manifest.json"
    m = json.loads(manifest_path.read_text())
    model_file = sorted((run / "level1").rglob("part-*"))[0]
    if how == "changed":
        model_file.write_bytes(model_file.read_bytes() + b"x")
    elif how == "missing":
        model_file.unlink()
    elif how == "extra":
        (run / "level2" / "stray.bin").write_bytes(b"x")
    elif how == "newer":
        m["format_version"] = 99
    elif how == "features":
        m["features"] = m["features"][:-1]
    elif how == "pyspark":
        m["versions"]["pyspark"] = "3.4.1"
    elif how == "no_checksums":
        m.pop("checksums")
    manifest_path.write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("changed", r"level1/.*part-.* was changed after training"),
        ("missing", r"level1/.*part-.* is missing"),
        ("extra", r"level2/stray.bin is not part of the trained bundle"),
        ("newer", r"bundle format 99 is newer than this rstack reads \(2\); upgrade rstack"),
        ("features", r"features .* differ from what this rstack computes"),
        ("pyspark", r"saved by pyspark 3.4.1, this is pyspark 3.5"),
        ("no_checksums", r"no model checksums recorded"),
    ],
)
def test_bundle_refuses_what_does_not_match(trained: TrainResult, tmp_path: Path, how: str, match: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run)
    Bundle.open(run)  # the untouched copy opens
    _tamper(run, how)
    with pytest.raises(InputError, match=match):
        Bundle.open(run)


def _drop(watch: Path, name: str, frame: pd.DataFrame, mtime: int) -> None:
    # Written elsewhere and renamed in, as a producer should; mtimes fix the file source's order.
    tmp = watch.parent / f".{name}"
    frame.to_parquet(tmp, index=False)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, watch / name)


def test_stream_equals_batch_and_resumes_without_repeats_after_a_stop_and_a_crash(
    trained: TrainResult, synth_dir: Path, tmp_path: Path, on_host: Callable[..., Any], runtime: Runtime
) -> None:
    from ray.exceptions import RayActorError

    symbols = ["SYN000USDT", "SYN004USDT"]
    tail = pd.concat(pd.read_parquet(synth_dir / f"{s}.parquet").iloc[-450:] for s in symbols)
    tail = tail.sort_values(["open_time", "symbol"]).reset_index(drop=True)
    # The first file holds more than the warm-up of the week-long windows, so every batch scores rows.
    chunks = np.split(np.arange(len(tail)), [400, 520, 640, 760])
    watch, out, ckpt = tmp_path / "in", tmp_path / "out", tmp_path / "ckpt"
    watch.mkdir()
    run = str(trained.run_dir)

    # Two rows no lookback can place (a null open_time, a null symbol) ride in the second file.
    unplaced = tail.iloc[[0, 1]].astype({"open_time": "Int64", "symbol": "object"})
    unplaced.iloc[0, unplaced.columns.get_loc("open_time")] = pd.NA
    unplaced.iloc[1, unplaced.columns.get_loc("symbol")] = None
    # The third file holds what training refuses: skipped and counted per file, the stream goes on.
    # An exact duplicate (removed), a conflicting pair and a NaN close (neither scored: the candle is a
    # gap) and a candle one minute off the hourly grid (skipped).
    third = tail.iloc[chunks[2]].copy()
    conflict, broken, off, dup = 530, 560, 590, 600
    third.loc[broken, "close"] = float("nan")
    bad_rows = pd.concat(
        [
            tail.loc[[conflict]].assign(volume=tail.loc[conflict, "volume"] * 1.5),
            tail.loc[[off]].assign(open_time=tail.loc[off, "open_time"] + 60_000),
            tail.loc[[dup]],
        ]
    )
    files = [tail.iloc[chunks[0]], pd.concat([tail.iloc[chunks[1]], unplaced]), pd.concat([third, bad_rows])]
    for i, frame in enumerate(files):
        _drop(watch, f"part-{i}.parquet", frame.astype({"open_time": "Int64", "symbol": "object"}), 1_700_000_000 + i)
    first = on_host(stream_dir, run, str(watch), str(out), str(ckpt), True)
    assert [b["batch_id"] for b in first["batches"]] == [0, 1, 2]

    # A restart on the same checkpoint reads only the new files and keeps the lookback.
    # A symbol the run was not trained on has no scale: its rows are counted per batch, never scored.
    part3 = tail.iloc[chunks[3]]
    stranger = part3[part3["symbol"] == symbols[0]].head(5).assign(symbol="NEWUSDT")
    for i in range(3, 5):
        frame = tail.iloc[chunks[i]]
        _drop(watch, f"part-{i}.parquet", pd.concat([frame, stranger]) if i == 3 else frame, 1_700_000_000 + i)
    # Killed (SIGKILL) with batch 3's output and buffer written and Spark's commit of it not: the
    # restarted stream replays batch 3 from the buffer batch 2 left, and goes on.
    on_host(set_host_env, ENV, "stream.before_commit")
    with pytest.raises(RayActorError):
        on_host(stream_dir, run, str(watch), str(out), str(ckpt), True)
    assert (ckpt / "lookback" / "buffer-000003.parquet").exists() and not (ckpt / "spark" / "commits" / "3").exists()
    runtime.restart_host()
    second = on_host(stream_dir, run, str(watch), str(out), str(ckpt), True)
    assert [b["batch_id"] for b in second["batches"]] == [3, 4]
    assert len(list(out.glob("batch-*.parquet"))) == 5  # one file per micro-batch

    streamed = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("batch-*.parquet")))
    assert not streamed.duplicated(["symbol", "open_time"]).any()
    whole = tmp_path / "whole"
    whole.mkdir()
    # Batch predict on the same candles, less the two the stream could not score.
    tail.drop(index=[conflict, broken]).to_parquet(whole / "all.parquet", index=False)
    reference = on_host(predict_dir, run, discover(whole), str(tmp_path / "batch.parquet"), None)
    batch = pd.read_parquet(tmp_path / "batch.parquet")
    streamed = streamed.sort_values(["symbol", "open_time"]).reset_index(drop=True)
    w = expected_warmup(tail[tail["symbol"] == symbols[0]], light_config())
    assert len(streamed) == len(batch) >= 2 * (450 - w) - 20
    pd.testing.assert_frame_equal(streamed, batch, check_exact=False, rtol=0, atol=1e-12)
    stats = [b for run_ in (first, second) for b in run_["batches"]]
    assert sum(b["warmup"] for b in stats) == reference["warmup_rows"]
    assert sum(b["late_rows_skipped"] for b in stats) == 0
    assert [b["duplicate_rows_removed"] for b in stats] == [0, 0, 1, 0, 0]
    assert stats[2]["skipped_rows"] == {"conflicting": 2, "bad_value": 1, "off_grid": 1}
    ((name, per_reason),) = stats[2]["skipped_files"].items()
    assert name.endswith("/in/part-2.parquet") and per_reason == stats[2]["skipped_rows"]
    assert [b["null_key_rows_skipped"] for b in stats] == [0, 2, 0, 0, 0]
    assert [b["unknown_symbol"] for b in stats] == [0, 0, 0, 5, 0]
    assert [list(b["null_key_files"].values()) for b in stats] == [[], [2], [], [], []]
    assert next(iter(stats[1]["null_key_files"])).endswith("/in/part-1.parquet")
    assert sum(b["rows_in"] for b in stats) == len(tail) + 2 + 5 + 3


def _klines(synth_dir: Path, out: Path, change: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Path:
    """Two symbols' last 450 candles in ``out``, changed by ``change``."""
    out.mkdir()
    for sym in ("SYN000USDT", "SYN004USDT"):
        df = pd.read_parquet(synth_dir / f"{sym}.parquet").iloc[-450:].reset_index(drop=True)
        (change(df) if change is not None and sym == "SYN004USDT" else df).to_parquet(out / f"{sym}.parquet")
    return out


def _duplicate_ten(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[100:110]], ignore_index=True)


def _conflicting(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[200]].assign(volume=df["volume"].iloc[200] * 1.5)], ignore_index=True)


def _nan_close(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[300, "close"] = float("nan")
    return df


def _minutes(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(open_time=df["open_time"].iloc[0] + 60_000 * np.arange(len(df)))


def test_predict_repairs_and_counts_as_training_does(
    trained: TrainResult, synth_dir: Path, tmp_path: Path, on_host: Callable[..., Any]
) -> None:
    doubled = _klines(synth_dir, tmp_path / "b", _duplicate_ten)
    got = on_host(predict_dir, str(trained.run_dir), discover(doubled), str(tmp_path / "b.parquet"), None)
    # Ten exact duplicates are removed and counted, not scored twice (nor given a zero return).
    assert got["checks"]["SYN004USDT"]["duplicate_rows_removed"] == 10 and got["duplicate_rows_removed"] == 10
    # The repairs training counts, counted on the rows predict scores.
    trained_repairs = set(trained.manifest["per_symbol"]["SYN004USDT"]["repairs"]) - {"duplicate_rows_removed"}
    assert set(got["repairs"]["SYN004USDT"]) == trained_repairs and trained_repairs
    preds = pd.read_parquet(tmp_path / "b.parquet")
    assert not preds.duplicated(["symbol", "open_time"]).any()
    w = expected_warmup(pd.read_parquet(doubled / "SYN000USDT.parquet"), light_config())
    assert got["rows_written"] == len(preds) == 2 * (450 - w)
    # The same probabilities as training's for the rows both scored.
    recorded = pd.read_parquet(trained.run_dir / "predictions" / "test.parquet")
    both = recorded.merge(preds, on=["symbol", "open_time"], suffixes=("_train", "_pred"))
    assert len(both) > 100
    np.testing.assert_allclose(both["l2_pred"], both["l2_train"], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_conflicting, r"symbol SYN004USDT \(SYN004USDT.parquet\): 1 open_time value\(s\) appear in rows with differ"),
        (_nan_close, r"symbol SYN004USDT \(SYN004USDT.parquet\): bad values in 1 rows \(nonfinite_price 1\).*fix or"),
        (_minutes, r"the klines are 1m candles \(60000 ms apart\) but the run was trained on 1h candles.*resample"),
    ],
)
def test_predict_refuses_what_training_refuses(
    trained: TrainResult,
    synth_dir: Path,
    tmp_path: Path,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    match: str,
) -> None:
    data = _klines(synth_dir, tmp_path / "k", change)
    args = ["predict", str(data), "--run", str(trained.run_dir), "--out", str(tmp_path / "p.parquet"), "--no-dashboard"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert re.search(match, " ".join(result.output.split())), result.output
    assert not (tmp_path / "p.parquet").exists()


def test_evaluate_judges_a_saved_run_on_later_klines_and_refuses_its_fitted_period(
    trained: TrainResult, synth_dir: Path, tmp_path: Path
) -> None:
    from rstack.models.metrics import evaluate

    run = str(trained.run_dir)
    refused = CliRunner().invoke(app, ["evaluate", run, "--data", str(synth_dir), "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2, refused.output
    assert "overlap the rows run" in refused.output and "L0-train to L2-fit" in refused.output
    assert not (tmp_path / "no").exists()

    # "Later" klines: each symbol's last 600 candles moved on by whole weeks (time-of-week features
    # unchanged) to after the run's training; the rows that were its test rows keep their history.
    week = 7 * 24 * 3_600_000
    later = tmp_path / "later"
    later.mkdir()
    for path in sorted(synth_dir.glob("*.parquet")):
        df = pd.read_parquet(path).iloc[-600:]
        df.assign(open_time=df["open_time"] + 12 * week).to_parquet(later / path.name)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", run, "--data", str(later), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and "verdict" in result.output
    judged = pd.read_parquet(out / "predictions" / "test.parquet")
    # The run's recorded test rows, found again with the same probabilities, labels and baseline.
    recorded = pd.read_parquet(trained.run_dir / "predictions" / "test.parquet")
    both = recorded.merge(judged.assign(open_time=judged["open_time"] - 12 * week), on=["symbol", "open_time"])
    assert len(both) == len(recorded)
    for col in [*PROB_COLS, "label", "baseline_p"]:
        np.testing.assert_allclose(both[f"{col}_y"], both[f"{col}_x"], rtol=0, atol=1e-9, err_msg=col)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation"]["run_id"] == trained.manifest["run_id"]
    assert manifest["evaluation"]["rows"] == len(judged) > len(recorded)
    want = evaluate(judged["label"].to_numpy(), judged["l2"].to_numpy(), 0.5)
    assert manifest["metrics"]["level2"]["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-12)
    assert set(manifest["metrics"]) >= {"level2", "level1", "baseline_trailing_vol", "baseline_prior"}
