"""Segments, purging and label thresholds of the persisted training table, on Spark on Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rstack.config import Config
from rstack.data.discover import discover
from rstack.data.synth import write_synthetic
from rstack.errors import InputError
from rstack.features.segments import compute_cutoffs
from rstack.features.table import build_training_table
from rstack.features.windows import warmup_rows
from tests.conftest import light_config
from tests.test_features import reference
from tests.test_volfeatures import reference as vol_reference

HOUR_MS = 3_600_000


def history_ok(one: pd.DataFrame, cfg: Config) -> np.ndarray:
    """Rows with enough history, by the pandas references: every time window at its minimum fill
    (test_volfeatures) and every row window full in its gap-free run. ``one`` sorted, no duplicates."""
    hist = vol_reference(one, 1.0, cfg.features, cfg.label.horizon)["_hist_ok"].to_numpy()
    run = (one["open_time"].diff() > cfg.features.max_gap_bars * HOUR_MS).cumsum()
    row_in_run = (one.groupby(run).cumcount() + 1).to_numpy()
    return hist & (row_in_run > warmup_rows(cfg.features, cfg.label.horizon))


def expected_warmup(one: pd.DataFrame, cfg: Config) -> int:
    one = one.drop_duplicates().sort_values("open_time").reset_index(drop=True)
    return int((~history_ok(one, cfg)).sum())


def table_and_summary(spark: Any, state: dict, data_dir: str, cfg: Config) -> tuple[pd.DataFrame, dict]:
    table, summary = build_training_table(spark, discover(Path(data_dir)), cfg)
    try:
        return table.toPandas(), summary
    finally:
        table.unpersist()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep")
    write_synthetic(out, symbols=4, rows=600, seed=5)
    return out


def test_cutoffs_snap_to_bars_and_follow_fractions() -> None:
    # 1000 bars from an off-grid start: cutoffs land on bar opens, at 70 / 80 / 90 % of the bars.
    start = 30
    cut = compute_cutoffs(start, start + 999 * 60, 60, (0.7, 0.1, 0.1, 0.1))
    assert cut.cutoffs_ms == (start + 700 * 60, start + 800 * 60, start + 900 * 60)
    odd = compute_cutoffs(start, start + 1234 * 60, 60, (0.33, 0.33, 0.17, 0.17))
    assert all((c - start) % 60 == 0 for c in odd.cutoffs_ms)
    assert odd.cutoffs_ms == (start + 407 * 60, start + 815 * 60, start + 1025 * 60)


def test_global_cutoffs_purge_and_embargo(data: Path, on_host: Callable[..., Any]) -> None:
    horizon, embargo = 5, 3
    cfg = light_config(**{"label.horizon": horizon, "split.embargo": embargo})
    table, summary = on_host(table_and_summary, str(data), cfg)
    cuts = summary["cutoffs"]["cutoffs_ms"]
    bar = summary["cutoffs"]["bar_ms"]
    assert bar == 3_600_000
    n_symbols = len(summary["symbols"])
    assert n_symbols == 4
    # Synthetic data has no gaps: every boundary loses exactly horizon bars before it and the
    # embargo after it, for every symbol.
    assert summary["purged_rows"] == {f"boundary_{i}": n_symbols * (horizon + embargo) for i in range(3)}
    for sym, g in table.groupby("symbol"):
        for i, c in enumerate(cuts):
            before = g.loc[g["segment"] == i, "open_time"]
            after = g.loc[g["segment"] == i + 1, "open_time"]
            # The same instant for every symbol; the last label before c ends before c.
            assert before.max() + horizon * bar < c, (sym, i)
            assert before.max() == c - (horizon + 1) * bar, (sym, i)
            assert after.min() == c + embargo * bar, (sym, i)
    assert set(table["segment"]) == {0, 1, 2, 3}


def test_thresholds_fit_on_l0_train_rows_only(tmp_path: Path, data: Path, on_host: Callable[..., Any]) -> None:
    cfg = light_config()
    table, summary = on_host(table_and_summary, str(data), cfg)
    cut0 = summary["cutoffs"]["cutoffs_ms"][0]
    bar, horizon = summary["cutoffs"]["bar_ms"], cfg.label.horizon
    for sym, thr in summary["label_thresholds"].items():
        one = pd.read_parquet(data / f"{sym}.parquet").sort_values("open_time").reset_index(drop=True)
        ref = reference(one)
        # Independently of the table: rows with enough history and a label that ends before the
        # first cutoff.
        defined = history_ok(one, cfg) & ref["fwd_rv"].notna() & ref["label_end_time"].notna()
        train = ref[defined & (ref["open_time"] < cut0 - horizon * bar)]
        assert summary["per_symbol"][sym]["segments"]["l0_train"] == len(train)
        assert thr == pytest.approx(train["fwd_rv"].quantile(0.5), rel=1e-9)
        labels = table.loc[table["symbol"] == sym]
        # Labels are 1 exactly where forward volatility beats the training-segment threshold.
        merged = labels.merge(ref[["open_time", "fwd_rv"]], on="open_time")
        assert ((merged["fwd_rv"] > thr).astype(float) == merged["label"]).all()

    # Make everything after the first cutoff far more volatile: thresholds must not move.
    wild = tmp_path / "wild"
    wild.mkdir()
    rng = np.random.default_rng(1)
    for p in sorted(data.glob("*.parquet")):
        df = pd.read_parquet(p)
        late = df["open_time"] >= cut0
        shock = np.exp(np.cumsum(rng.normal(0, 0.05, late.sum())))
        for col in ("open", "high", "low", "close"):
            df.loc[late, col] = df.loc[late, col] * shock
        df.to_parquet(wild / p.name)
    _, wild_summary = on_host(table_and_summary, str(wild), cfg)
    assert wild_summary["cutoffs"] == summary["cutoffs"]
    assert wild_summary["label_thresholds"] == summary["label_thresholds"]
    assert wild_summary["positive_rate_by_segment"]["test"] > summary["positive_rate_by_segment"]["test"]


def test_late_listing_is_excluded_and_reported(tmp_path: Path, data: Path, on_host: Callable[..., Any]) -> None:
    late = tmp_path / "late"
    late.mkdir()
    for p in sorted(data.glob("*.parquet")):
        pd.read_parquet(p).to_parquet(late / p.name)
    newcomer = pd.read_parquet(data / "SYN000USDT.parquet").iloc[-100:].assign(symbol="NEWUSDT")
    newcomer.to_parquet(late / "NEWUSDT.parquet")
    # Too short for the 50-bar windows plus the horizon: no usable row at all.
    short = pd.read_parquet(data / "SYN001USDT.parquet").iloc[:40].assign(symbol="SHORTUSDT")
    short.to_parquet(late / "SHORTUSDT.parquet")
    table, summary = on_host(table_and_summary, str(late), light_config())
    assert "NEWUSDT" in summary["excluded_symbols"]
    assert "0 usable L0-train rows" in summary["excluded_symbols"]["NEWUSDT"]
    assert "0 usable L0-train rows" in summary["excluded_symbols"]["SHORTUSDT"]
    assert summary["per_symbol"]["SHORTUSDT"]["usable"] == 0
    assert not {"NEWUSDT", "SHORTUSDT"} & set(table["symbol"])
    assert summary["per_symbol"]["NEWUSDT"]["rows"] == 100


def test_warmup_and_label_rows_are_counted(data: Path, on_host: Callable[..., Any]) -> None:
    cfg = light_config()
    _, summary = on_host(table_and_summary, str(data), cfg)
    for sym, stats in summary["per_symbol"].items():
        k = expected_warmup(pd.read_parquet(data / f"{sym}.parquet"), cfg)
        # The week-long windows (168 bars, 80 % filled) and the 7-day seasonal profile set the warm-up.
        assert 130 < k < 170
        assert stats["dropped_warmup"] == k, sym
        assert stats["dropped_no_label"] == cfg.label.horizon, sym
        accounted = stats["dropped_warmup"] + stats["dropped_no_label"] + stats["dropped_invalid"] + stats["usable"]
        assert accounted == stats["rows"] == 600, sym
        assert stats["gaps"] == 0 and stats["repairs"]["duplicate_rows_removed"] == 0


def _edit(data: Path, out: Path, symbol: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    out.mkdir()
    for p in sorted(data.glob("*.parquet")):
        df = pd.read_parquet(p)
        (change(df) if p.stem == symbol else df).to_parquet(out / p.name)
    return out


def _set(row: int, **values: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        for col, v in values.items():
            df.loc[row, col] = v
        return df

    return change


def _off_grid(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[300:], "open_time"] += 60_000  # a 1h series that switches to a 1m offset
    return df


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            _set(300, close=0.0),
            r"symbol SYN002USDT \(SYN002USDT.parquet\): bad values in 1 rows \(nonpositive_price 1, incon",
        ),
        (_set(300, close=float("nan")), r"bad values in 1 rows \(nonfinite_price 1\), first nonfinite_price at"),
        (_set(300, high=float("inf")), r"bad values in 1 rows \(nonfinite_price 1\)"),
        (_set(300, high=1e-9), r"inconsistent_ohlc 1"),
        (_set(300, volume=-1.0), r"negative_volume 1.*fix or drop those rows"),
        (
            lambda df: pd.concat([df, df.iloc[[10]].assign(volume=df["volume"].iloc[10] + 1.0)]),
            r"1 open_time value\(s\) appear in rows with different values",
        ),
        (
            # An exact duplicate beside a conflicting row of the same open_time: one conflict, not two.
            lambda df: pd.concat([df.iloc[[10]], df, df.iloc[[10]], df.iloc[[10]].assign(high=df["high"][10] * 2)]),
            r"SYN002USDT \(SYN002USDT.parquet\): 1 open_time value\(s\) appear in rows with different values",
        ),
        (_off_grid, r"steps are not a multiple of the dataset's interval 3600000 ms .* mixed intervals"),
    ],
)
def test_bad_rows_are_errors_naming_symbol_and_fix(
    tmp_path: Path, data: Path, on_host: Callable[..., Any], change: Callable[[pd.DataFrame], pd.DataFrame], match: str
) -> None:
    bad = _edit(data, tmp_path / "bad", "SYN002USDT", change)
    with pytest.raises(InputError, match=match):
        on_host(table_and_summary, str(bad), light_config())


def test_exact_duplicates_and_gaps_are_repaired_and_counted(
    tmp_path: Path, data: Path, on_host: Callable[..., Any]
) -> None:
    def dup_and_gap(df: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([df.drop(index=range(200, 204)), df.iloc[[10, 11]]]).sample(frac=1.0, random_state=0)

    edited = _edit(data, tmp_path / "edited", "SYN003USDT", dup_and_gap)  # also unsorted: order is irrelevant
    # The same symbol in two files, overlapping by 5 equal rows.
    whole = pd.read_parquet(data / "SYN001USDT.parquet")
    (edited / "SYN001USDT.parquet").unlink()
    whole.iloc[:305].to_parquet(edited / "SYN001USDT-a.parquet")
    whole.iloc[300:].to_parquet(edited / "SYN001USDT-b.parquet")
    _, summary = on_host(table_and_summary, str(edited), light_config())
    s = summary["per_symbol"]["SYN003USDT"]
    assert s["repairs"]["duplicate_rows_removed"] == 2
    assert (s["gaps"], s["missing_candles"]) == (1, 4)
    # Row windows restart after the gap; time windows only wait until they are filled enough again.
    gapped = pd.read_parquet(edited / "SYN003USDT.parquet")
    assert s["rows"] == 596 and s["dropped_warmup"] == expected_warmup(gapped, light_config())
    # Four missing candles (five returns) blank the one-day window (20 of 24 returns needed) for about a
    # day's bars, not the week-long ones: far fewer extra warm-up rows than a week's 168.
    extra = s["dropped_warmup"] - expected_warmup(pd.read_parquet(data / "SYN003USDT.parquet"), light_config())
    assert 5 <= extra <= 30
    assert summary["per_symbol"]["SYN001USDT"]["repairs"]["duplicate_rows_removed"] == 5
    assert summary["per_symbol"]["SYN001USDT"]["rows"] == 600
    assert summary["totals"]["repairs"]["duplicate_rows_removed"] == 2 + 5


def _persisted_after_error(spark: Any, state: dict, data_dir: str, cfg: Config) -> tuple[str, int, int]:
    jsc = spark.sparkContext._jsc
    before = jsc.getPersistentRDDs().size()
    try:
        build_training_table(spark, discover(Path(data_dir)), cfg)
    except InputError as exc:
        return str(exc), before, jsc.getPersistentRDDs().size()
    raise AssertionError("expected an InputError")


def test_coarse_candles_train_without_the_intraday_windows(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    # 4-hour candles: 6 a day, too few for the intraday seasonal profile of a 5-bar horizon.
    write_synthetic(tmp_path, symbols=2, rows=600, seed=2, interval="4h")
    with pytest.raises(InputError, match=r"4-?h.*1 bar.*feature_set extended.*level1.context \[\] and eval.baselines"):
        on_host(table_and_summary, str(tmp_path), light_config())
    plain = {"features.feature_set": "extended", "level1.context": [], "eval.baselines": []}
    table, summary = on_host(table_and_summary, str(tmp_path), light_config(**plain))
    assert summary["table_columns"] == summary["feature_columns"] and "lrv_1d" not in table.columns
    # Row windows only: the extended set's 50-bar warm-up, no week.
    assert all(s["dropped_warmup"] == 50 for s in summary["per_symbol"].values())


def test_an_input_error_leaves_nothing_cached(data: Path, on_host: Callable[..., Any]) -> None:
    # Raised after the klines and the feature table were both built and cached: a host that goes on
    # serving (a host reused by the next run in the same Ray session) must not keep them.
    message, before, after = on_host(_persisted_after_error, str(data), light_config(**{"split.min_train_rows": 10**9}))
    assert "split.min_train_rows = 1000000000" in message
    assert after == before


def test_a_fold_reads_nothing_past_its_cut(tmp_path: Path, data: Path, on_host: Callable[..., Any]) -> None:
    # After the fold's cut: a broken candle and a switch to 1-minute candles. Neither is read by the
    # fold, so neither fails it nor shapes its interval.
    def trouble_after_cut(df: pd.DataFrame) -> pd.DataFrame:
        minutes = df.iloc[-300:].assign(open_time=df["open_time"].iloc[-1] + 60_000 * np.arange(1, 301))
        df.loc[590, "close"] = float("nan")
        return pd.concat([df, minutes], ignore_index=True)

    edited = _edit(data, tmp_path / "late", "SYN002USDT", trouble_after_cut)
    _, summary = on_host(table_and_summary, str(edited), light_config(**{"split.until": 0.8}))
    assert summary["bar_ms"] == HOUR_MS
    assert summary["until_ms"] is not None
    assert all(s["last_ms"] < summary["until_ms"] for s in summary["per_symbol"].values())
    with pytest.raises(InputError, match=r"SYN002USDT.*nonfinite_price 1"):
        on_host(table_and_summary, str(edited), light_config())


def _flags_on_spark(spark: Any, state: dict, frame: pd.DataFrame) -> pd.DataFrame:
    from pyspark.sql import functions as F

    from rstack.data.rules import PRICE_COLUMNS, bad_value_flags, spark_nonfinite, to_ms_spark

    df = spark.createDataFrame(frame)
    flags = bad_value_flags({c: F.col(c) for c in PRICE_COLUMNS}, spark_nonfinite)
    return df.select(to_ms_spark(F.col("open_time")).alias("ms"), *[v.alias(k) for k, v in flags.items()]).toPandas()


def test_row_rules_give_the_same_answer_in_spark_numpy_and_arrow(on_host: Callable[..., Any]) -> None:
    import pyarrow as pa

    from rstack.data.rules import PRICE_COLUMNS, bad_value_flags, numpy_nonfinite, to_ms_arrow

    nan, inf = float("nan"), float("inf")
    rows = [  # open, high, low, close, volume
        (1.0, 1.2, 0.9, 1.1, 5.0),
        (nan, 1.2, 0.9, 1.1, 5.0),
        (1.0, inf, 0.9, 1.1, 5.0),
        (1.0, 1.2, 0.9, 1.1, -inf),
        (0.0, 1.2, 0.0, 1.1, 5.0),
        (1.0, 0.8, 0.9, 0.85, 5.0),
        (1.3, 1.2, 0.9, 1.1, 5.0),
        (1.0, 1.2, 0.9, 1.1, -1.0),
        (-1.0, -0.5, -2.0, -1.0, 0.0),
    ]
    frame = pd.DataFrame(rows, columns=list(PRICE_COLUMNS))
    frame.insert(0, "open_time", [1_704_067_200_000 + i * HOUR_MS for i in range(len(rows))])
    frame.loc[::2, "open_time"] *= 1000  # every other one in µs
    spark = on_host(_flags_on_spark, frame)
    with np.errstate(invalid="ignore"):
        local = bad_value_flags({c: frame[c].to_numpy() for c in PRICE_COLUMNS}, numpy_nonfinite)
    for kind, mask in local.items():
        assert spark[kind].tolist() == mask.tolist(), kind
    assert [k for k, m in local.items() if m[1:].any()] == list(local)  # every kind is exercised
    arrow, micros = to_ms_arrow(pa.array(frame["open_time"], pa.int64()))
    assert arrow.to_pylist() == spark["ms"].tolist() and micros == 5
    assert spark["ms"].tolist() == [1_704_067_200_000 + i * HOUR_MS for i in range(len(rows))]


def test_data_check_judges_intervals_and_gaps_as_training_does(tmp_path: Path, on_host: Callable[..., Any]) -> None:
    from rstack.data.check import check_dir

    write_synthetic(tmp_path, symbols=2, rows=600, seed=4)
    sparse = pd.read_parquet(tmp_path / "SYN001USDT.parquet").iloc[::2]  # every other candle: a gap at each step
    sparse.to_parquet(tmp_path / "SYN001USDT.parquet")
    stats = check_dir(tmp_path)
    _, summary = on_host(table_and_summary, str(tmp_path), light_config())
    # The folder's interval, as training infers it, not the sparse symbol's own 2-hour mode.
    assert stats["SYN001USDT"]["interval_ms"] == summary["bar_ms"] == HOUR_MS
    for sym in ("SYN000USDT", "SYN001USDT"):
        got = (stats[sym]["gaps"], stats[sym]["missing_candles"])
        assert got == (summary["per_symbol"][sym]["gaps"], summary["per_symbol"][sym]["missing_candles"])
    assert stats["SYN001USDT"]["gaps"] == 299
    # Steps of 90 minutes in a 1-hour folder: training refuses them, so the check calls them bad.
    odd = sparse.assign(open_time=sparse["open_time"].iloc[0] + 5_400_000 * np.arange(len(sparse)))
    odd.assign(symbol="ODDUSDT").to_parquet(tmp_path / "ODDUSDT.parquet")
    assert check_dir(tmp_path)["ODDUSDT"]["off_grid_steps"] > 0 and check_dir(tmp_path)["ODDUSDT"]["bad"] > 0
    with pytest.raises(InputError, match=r"symbol ODDUSDT .* not a multiple of the dataset's interval 3600000"):
        on_host(table_and_summary, str(tmp_path), light_config())
