"""CLI contract: exit codes and messages, through Typer's CliRunner (no Ray needed for these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from rstack.cli.app import app

runner = CliRunner()


def test_synth_writes_one_file_per_symbol(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", str(tmp_path), "--symbols", "3", "--rows", "50", "--seed", "1"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert files == ["SYN000USDT.parquet", "SYN001USDT.parquet", "SYN002USDT.parquet"]
    df = pd.read_parquet(tmp_path / files[0])
    assert list(df.columns) == ["symbol", "open_time", "open", "high", "low", "close", "volume"]
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    again = tmp_path / "again"
    runner.invoke(app, ["data", "synth", str(again), "--symbols", "3", "--rows", "50", "--seed", "1"])
    pd.testing.assert_frame_equal(df, pd.read_parquet(again / files[0]))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["train", "{empty}"], "holds no *.parquet files"),
        (["train", "{empty}", "--batch-size", "0"], "level0.batch_size = 0 is invalid"),
        (["train", "{empty}", "--feature-set", "fancy"], "use one of seed, extended"),
        (["train"], "give DATA_DIR"),
        (["data", "synth", "{empty}", "--interval", "7m"], "unknown interval '7m'"),
    ],
)
def test_bad_usage_exits_2_with_a_message(
    tmp_path: Path, args: list[str], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RSTACK_DATA_DIR", raising=False)
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [*args, "--models", str(tmp_path / "m")] if args[0] == "train" else args)
    assert result.exit_code == 2, result.output
    assert match in result.output
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize(("symbols", "rows", "seed"), [(12, 3000, 7), (40, 400, 3)])  # first: the demo's set
def test_synth_is_finite_and_valid(tmp_path: Path, symbols: int, rows: int, seed: int) -> None:
    from rstack.data.check import check_dir
    from rstack.data.synth import write_synthetic

    write_synthetic(tmp_path, symbols=symbols, rows=rows, seed=seed)
    stats = check_dir(tmp_path)
    assert len(stats) == symbols
    assert all(s["bad"] == 0 and s["gaps"] == 0 and s["duplicate_rows"] == 0 for s in stats.values())
    assert sum(s["zero_volume"] for s in stats.values()) > 0  # the Binance quirk is there on purpose


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.65])
def test_metrics_table_names_the_threshold_its_confusion_counts_use(threshold: float) -> None:
    from rstack.reporting.tables import format_metrics

    row = {"roc_auc": 0.7, "pr_auc": 0.5, "log_loss": 0.6, "brier": 0.2, "rows": 10, "positive_rate": 0.3}
    table = format_metrics({"level2": {**row, "confusion": {"tp": 1, "fp": 2, "tn": 3, "fn": 4}}}, threshold)
    assert table.splitlines()[0].endswith(f"tp/fp/tn/fn @{threshold:g}")
    assert table.splitlines()[2].endswith("1/2/3/4")


def test_walk_forward_cannot_resume_and_says_so_before_starting_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--walk-forward", "2", "--resume", "x"])
    assert result.exit_code == 2
    assert "walk_forward (--walk-forward) makes K new runs; it cannot be combined with resume or run_id" in (
        result.output
    )


def _help_texts(command: Any, path: str = "rstack") -> list[tuple[str, str]]:
    """(where, text) for a command's own help and each of its options', through its subcommands."""
    texts = [(path, command.help or "")] + [
        (f"{path} {p.name}", getattr(p, "help", None) or "") for p in command.params
    ]
    for name, sub in getattr(command, "commands", {}).items():
        texts += _help_texts(sub, f"{path} {name}")
    return texts


def test_every_help_text_shows_as_written() -> None:
    # Typer renders help with Rich markup, which swallows a bracketed word such as "[choices]" whole.
    from rich.text import Text
    from typer.main import get_command

    texts = _help_texts(get_command(app))
    assert len(texts) > 50
    lost = [(where, text) for where, text in texts if Text.from_markup(text).plain != text]
    assert not lost, lost
