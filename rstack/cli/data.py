"""``rstack data``: make, import, download and check kline datasets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rstack.cli.common import fail, setup_logging, utc_minutes
from rstack.errors import InputError, RstackError

data_app = typer.Typer(no_args_is_help=True, help="Make and inspect kline datasets.")


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write one Parquet file per symbol into.")],
    symbols: Annotated[int, typer.Option(help="Number of symbols.")] = 12,
    rows: Annotated[int, typer.Option(help="Candles per symbol.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    interval: Annotated[str, typer.Option(help="Candle interval: 1m, 5m, 15m, 1h, 4h.")] = "1h",
) -> None:
    """Write synthetic klines (GARCH volatility clustering, fat tails) in rstack's layout."""
    from rstack.data.synth import write_synthetic

    try:
        paths = write_synthetic(out, symbols=symbols, rows=rows, seed=seed, interval=interval)
    except RstackError as exc:
        raise fail(exc) from None
    typer.echo(f"wrote {len(paths)} files x {rows} rows to {out}")


@data_app.command("import")
def import_(
    sources: Annotated[list[Path], typer.Argument(help="Kline .zip/.csv archives, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one Parquet file per symbol.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol, when file names do not carry it.")] = None,
    interval: Annotated[str | None, typer.Option(help="Interval, when file names do not carry it.")] = None,
) -> None:
    """Import Binance kline archives (as published on data.binance.vision) into rstack's layout."""
    from rstack.data.binance import import_archives

    files = [
        p
        for src in sources
        for p in ([src] if src.is_file() else sorted(src.rglob("*")))
        if p.suffix in (".zip", ".csv")
    ]
    try:
        with typer.progressbar(length=max(len(files), 1), label="importing", file=sys.stderr) as bar:
            summary = import_archives(sources, out, symbol, interval, progress=lambda _p: bar.update(1))
    except RstackError as exc:
        raise fail(exc) from None
    typer.echo(f"{summary.files} archives -> {len(summary.symbols)} symbols, {summary.rows} rows in {out}")
    for sym, s in summary.symbols.items():
        typer.echo(
            f"  {sym:<14}{s['rows']:>10}  {utc_minutes(s['first_ms'])} .. {utc_minutes(s['last_ms'])}  "
            + ",".join(s["intervals"])
        )
    for key, count in sorted(summary.repairs.items()):
        typer.echo(f"  repair/check: {key} = {count}")


@data_app.command("download")
def download_(
    out: Annotated[Path, typer.Argument(help="Folder for the imported Parquet files.")],
    symbols: Annotated[str, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT.")],
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM.")],
    interval: Annotated[str, typer.Option(help="Kline interval, e.g. 1m, 5m, 1h.")] = "1h",
    market: Annotated[str, typer.Option(help="spot or futures-um.")] = "spot",
    base_url: Annotated[str, typer.Option(help="Archive site.", envvar="RSTACK_BINANCE_URL")] = (
        "https://data.binance.vision"
    ),
    archives: Annotated[Path | None, typer.Option(help="Where archives are kept; default OUT/_archives.")] = None,
    retries: Annotated[int, typer.Option(help="Retries per file, with exponential backoff.")] = 3,
) -> None:
    """Download monthly kline archives with their checksums, verify them, then import."""
    from rstack.data.binance import import_archives
    from rstack.data.download import download

    setup_logging(False)
    keep = archives or out / "_archives"
    try:
        result = download(
            [s.strip() for s in symbols.split(",") if s.strip()],
            interval,
            start,
            end,
            keep,
            market=market,
            base_url=base_url,
            retries=retries,
            progress=lambda name: typer.echo(f"  fetched {name}", err=True),
        )
        if not result.fetched and not result.skipped_verified:
            raise InputError(f"no archive found for {symbols} {interval} {start}..{end} on {base_url} ({market})")
        summary = import_archives([keep], out)
    except RstackError as exc:
        raise fail(exc) from None
    typer.echo(
        f"fetched {len(result.fetched)}, already verified {len(result.skipped_verified)}, "
        f"missing {len(result.missing)}{': ' + ', '.join(result.missing) if result.missing else ''}"
    )
    typer.echo(f"imported {summary.rows} rows of {len(summary.symbols)} symbols into {out}")


@data_app.command("check")
def check(data_dir: Annotated[Path, typer.Argument(help="Folder of kline Parquet files.")]) -> None:
    """Per-symbol health by training's own row rules: rows, range, the folder's interval, gaps,
    duplicates, zero volume, bad values. Exit 2 when a symbol would fail training (non-finite or
    non-positive prices, inconsistent OHLC, negative volume, conflicting duplicates, steps off the
    folder's interval)."""
    from rstack.data.check import check_dir
    from rstack.data.rules import interval_name

    try:
        stats = check_dir(data_dir)
    except RstackError as exc:
        raise fail(exc) from None
    head = (
        f"{'symbol':<14}{'rows':>9}  {'first':<16}  {'last':<16}{'step':>7}{'gaps':>6}{'missing':>8}"
        f"{'dups':>6}{'conflict':>9}{'off_grid':>9}{'unsorted':>9}{'zero_vol':>9}{'bad':>6}"
    )
    typer.echo(head)
    for sym, s in stats.items():
        step = interval_name(s["interval_ms"]) if s["interval_ms"] else "-"
        typer.echo(
            f"{sym:<14}{s['rows']:>9}  {utc_minutes(s['first_ms']):<16}  {utc_minutes(s['last_ms']):<16}{step:>7}"
            f"{s['gaps']:>6}{s['missing_candles']:>8}{s['duplicate_rows']:>6}{s['conflicting_duplicates']:>9}"
            f"{s['off_grid_steps']:>9}{s['unsorted_steps']:>9}{s['zero_volume']:>9}{s['bad']:>6}"
        )
    bad = [sym for sym, s in stats.items() if s["bad"]]
    if bad:
        typer.echo(f"error: rows training would refuse in {', '.join(bad)}; see the columns above", err=True)
        raise typer.Exit(2)
