"""rstack against the seed's design (scripts/seed_reference.py) on the same data, config and cores, and
how rstack's time per symbol grows with the number of symbols.

    .venv/bin/python scripts/bench.py [--data DIR] [--config FILE] [--batch-size 4] [--cores 2]
        [--repeats 3] [--only a,b,c] [--baselines] [--json OUT] [--markdown] [--no-warm-up]
        [--no-sweep | --sweep-only] [--sweep-symbols 4] [--sweep-rows 4000] [--sweep-repeats 1]

Variants, each run as its own process (start-up included, as a user sees it), interleaved a1 b1 c1 a2 ...
so that drift in the machine hits all of them alike:

    a  rstack     `rstack train`, 1 Spark executor x CORES cores
    b  rstack-c1  the same with --concurrency 1 (one Level-0 batch at a time)
    c  seed       scripts/seed_reference.py, the frozen yardstick (imports nothing from rstack): the
                  seed's design in local PySpark, local[CORES], batches one after another; its ROC-AUC
                  is Level 2's in-sample figure on the seed's holdout, shown but never compared
    d  rstack-xgb  variant a with level0.learner = xgboost_rf (optional: --only a,b,c,d)
    e  seed-cache  variant c with rstack's cacheNodeIds on its forests (optional): what the seed would
                   gain from that one setting, so the design's share of a/c can be told apart
    f  rstack-bl   variant a with the config's baseline models on (eval.baselines), whatever --baselines
                   says (optional): their cost, as the ratio f / a

Without --data it writes a synthetic set (8 symbols x 4000 hourly rows, seed 7). Baselines are off (but in f)
unless --baselines (the seed reference fits none). A sampler sums the PSS and the RSS of each run's whole process
tree (Ray's raylet, GCS and workers, the Spark JVMs) every 0.25 s and keeps the peak. The table shows
medians over the repeats and the ratios between variants. The sweep runs variant a on 1x, 2x and 4x
--sweep-symbols synthetic symbols and reports the time per symbol, start-up excluded. Before all of
it, one untimed warm-up run on a tiny synthetic set of each program the chosen variants start (rstack;
the seed reference if c or e is chosen); --no-warm-up skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {"a": "rstack", "b": "rstack-c1", "c": "seed", "d": "rstack-xgb", "e": "seed-cache", "f": "rstack-bl"}
# Variants run by scripts/seed_reference.py rather than `rstack train`.
SEED_LETTERS = ("c", "e")
SEED = 7
MULTIPLIERS = (1, 2, 4)
SAMPLE_SECONDS = 0.25
GRACE_SECONDS = 5.0
TAIL_LINES = 30
GIB = 2**30

# (record key, header, format) of the comparison table, in print order.
COLUMNS = [
    ("total", "total s", "{:.1f}"),
    ("startup", "startup", "{:.1f}"),
    ("features", "features", "{:.1f}"),
    ("level0", "level0", "{:.1f}"),
    ("level1_2", "L1+L2", "{:.1f}"),
    ("evaluate", "eval", "{:.1f}"),
    ("save", "save", "{:.1f}"),
    ("wall", "wall", "{:.1f}"),
    ("peak_pss_gib", "PSS GiB", "{:.2f}"),
    ("peak_rss_gib", "RSS GiB", "{:.2f}"),
    ("rows_per_s", "rows/s", "{:.0f}"),
    ("roc_auc", "ROC-AUC", "{:.4f}"),
]


@dataclass(frozen=True)
class Setup:
    """What every run of one bench shares."""

    config: Path
    batch_size: int
    cores: int
    baselines: bool


def pss_bytes(pid: int) -> int:
    """Proportional set size: the process's own pages plus its share of each page it shares.

    Read from /proc/PID/smaps_rollup (one pre-summed file; psutil's memory_full_info walks all of
    smaps, too slow to sample every 0.25 s). Summed over a process tree it counts shared pages once.
    """
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Peak summed RSS and PSS of a process and all its descendants, sampled on a thread while it runs."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: set[psutil.Process] = set()
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_SECONDS)

    def _sample(self) -> None:
        try:
            children = self.root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        # Remembered for reap_strays: once the root exits, its orphans are no longer its children.
        self.seen.update(children)
        total = pss = 0
        for proc in [self.root, *children]:
            try:
                total += proc.memory_info().rss
                pss += pss_bytes(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                continue
        self.peak = max(self.peak, total)
        self.peak_pss = max(self.peak_pss, pss)

    def reap_strays(self) -> list[str]:
        """Kill the descendants still alive after the root exited; their names, for the output."""
        # Ray's processes exit on their own shortly after their driver: only those that do not are strays.
        _, left = psutil.wait_procs([p for p in self.seen if _alive(p)], timeout=GRACE_SECONDS)
        killed = []
        for proc in left:
            try:
                name = f"{proc.name()}[{proc.pid}]"
                proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            killed.append(name)
        psutil.wait_procs(left, timeout=GRACE_SECONDS)
        return killed


def _alive(proc: psutil.Process) -> bool:
    # A zombie holds no memory and cannot be killed; its parent reaps it.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def fail(what: str, output: str) -> NoReturn:
    print(f"\nerror: {what}; last {TAIL_LINES} lines of its output:", file=sys.stderr)
    print("\n".join(output.splitlines()[-TAIL_LINES:]), file=sys.stderr)
    raise SystemExit(1)


def synth(out: Path, symbols: int, rows: int) -> Path:
    cmd = [sys.executable, "-m", "rstack.cli", "data", "synth", str(out), "--symbols", str(symbols)]
    cmd += ["--rows", str(rows), "--seed", str(SEED), "--interval", "1h"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"`rstack data synth {out}` exited with {done.returncode}", done.stdout + done.stderr)
    return out


def command(letter: str, data: Path, setup: Setup, out: Path) -> list[str]:
    if letter in SEED_LETTERS:
        # The frozen reference takes no rstack config: it is the seed's design, whatever rstack's defaults are.
        cmd = [sys.executable, str(ROOT / "scripts" / "seed_reference.py"), str(data)]
        cmd += ["--batch-size", str(setup.batch_size), "--cores", str(setup.cores), "--out", str(out)]
        return cmd + (["--cache-node-ids"] if letter == "e" else [])
    cmd = [sys.executable, "-m", "rstack.cli", "train", str(data), "--models", str(out), "--config", str(setup.config)]
    # The same cores as the seed's local[C]: one executor holding all of them.
    cmd += ["--batch-size", str(setup.batch_size), "--executors", "1", "--executor-cores", str(setup.cores)]
    return cmd + (["--concurrency", "1"] if letter == "b" else [])


def run_env(letter: str, setup: Setup, temp: Path) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TMPDIR": str(temp), "RSTACK_RUNTIME__RAY_TEMP_DIR": str(temp)}
    env.pop("RAY_ADDRESS", None)  # a local Ray per run, never a cluster this shell happens to point at
    if letter == "f":
        # The config's own baselines, whatever this shell says (an exported empty value would make f = a).
        env.pop("RSTACK_EVAL__BASELINES", None)
    elif not setup.baselines:
        # An empty value parses as an empty list (rstack.config.checks.listed); "[]" would be one baseline named "[]".
        env["RSTACK_EVAL__BASELINES"] = ""
    if letter == "d":
        env["RSTACK_LEVEL0__LEARNER"] = "xgboost_rf"
    return env


def run_tree(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float, float, list[str]]:
    """Run cmd to its end: exit code, wall seconds, peak RSS and PSS of its process tree (GiB), strays killed."""
    with log.open("wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        sampler = RssSampler(proc.pid)
        try:
            with sampler:
                code = proc.wait()
                wall = time.perf_counter() - t0
        finally:
            # Also on Ctrl-C or an error here: no training run, and no Ray of one, outlives the bench.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            strays = sampler.reap_strays()
    return code, wall, sampler.peak / GIB, sampler.peak_pss / GIB, strays


def stage_times(letter: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A run's figures in one shape, whether from rstack's manifest or the seed reference's JSON."""
    t = raw["timings"]
    if letter in SEED_LETTERS:
        stages = {"level1_2": t["level1_level2"], "evaluate": t["evaluate"], "save": t["save"]}
        input_rows = raw["input_rows"]
    else:
        # rstack times evaluation and the meta models' save inside level1_level2; the seed times them apart.
        evaluate, save_meta = t["level1_level2.evaluate"], t["level1_level2.save_meta"]
        stages = {
            "level1_2": t["level1_level2"] - evaluate - save_meta,
            "evaluate": evaluate,
            "save": t["save"] + save_meta,
        }
        input_rows = raw["input_rows"]["rows"]
    return {
        "total": t["total"],
        "startup": t["startup"],
        "features": t["features"],
        "level0": t["level0"],
        **stages,
        "input_rows": input_rows,
        "symbols": len(raw["symbols"]),
        "roc_auc": raw["metrics"]["level2"]["roc_auc"],
    }


def run_variant(letter: str, data: Path, setup: Setup, work: Path, tag: str) -> dict[str, Any]:
    """One run of a variant in its own process, with its own temp folder; its record."""
    out = work / (f"{tag}.json" if letter in SEED_LETTERS else tag)
    # Short and under /tmp whatever TMPDIR says: Ray's socket paths inside it must fit in 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    try:
        log = temp / "output.log"
        cmd, env = command(letter, data, setup, out), run_env(letter, setup, temp)
        code, wall, peak, peak_pss, strays = run_tree(cmd, env, log)
        if strays:
            print(f"  {tag}: killed {len(strays)} process(es) left after the run: {', '.join(strays)}")
        if code != 0:
            fail(f"{tag} ({VARIANTS[letter]}) exited with {code}", log.read_text(errors="replace"))
        raw = json.loads((out if letter in SEED_LETTERS else out / "latest" / "manifest.json").read_text())
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        if out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        else:
            out.unlink(missing_ok=True)
    rec = {"variant": VARIANTS[letter], "tag": tag, **stage_times(letter, raw), "wall": wall, "peak_rss_gib": peak}
    rec["peak_pss_gib"] = peak_pss
    rec["rows_per_s"] = rec["input_rows"] / wall
    auc = "-" if rec["roc_auc"] is None else f"{rec['roc_auc']:.4f}"
    print(
        f"{tag:<12} {rec['variant']:<10} total {rec['total']:6.1f}s  wall {wall:6.1f}s  "
        f"peak PSS {peak_pss:5.2f} GiB  RSS {peak:5.2f} GiB  ROC-AUC {auc}",
        flush=True,
    )
    return rec


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    # ROC-AUC is null when the test segment holds one class; the median is over the runs that have one.
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per variant, the median of each column over its repeats, plus the range of total."""
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        out[name] = {key: _median(mine, key) for key, _, _ in COLUMNS}
        out[name]["total_min"] = min(r["total"] for r in mine)
        out[name]["total_max"] = max(r["total"] for r in mine)
    return out


def print_table(title: str, headers: list[str], rows: list[list[str]], markdown: bool) -> None:
    """Fixed-width text (first column left, the rest right-aligned), then as markdown if asked."""
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join([cells[0].ljust(widths[0]), *padded[1:]])

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    if markdown:
        print()
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_comparison(runs: list[dict[str, Any]], setup: Setup, repeats: int, markdown: bool) -> None:
    med = summarize(runs)
    rows = []
    for name, m in med.items():
        cells = [_fmt(m[key], fmt) for key, _, fmt in COLUMNS]
        cells[0] += f" [{m['total_min']:.1f}-{m['total_max']:.1f}]"
        rows.append([name, *cells])
    title = f"medians over {repeats} repeat(s); batch size {setup.batch_size}, {setup.cores} cores, {setup.config.name}"
    print_table(title, ["variant", *(h for _, h, _ in COLUMNS)], rows, markdown)
    print(
        "total, startup..save: the run's own timers; wall: its process as timed here (interpreter start and exit "
        "included); [min-max] of total; rows/s: input rows / wall; PSS GiB: peak proportional set "
        "size summed over the process tree (shared pages divided among the processes); RSS GiB: the same with "
        "shared pages counted in each."
    )
    if len({(r["input_rows"], r["symbols"]) for r in runs}) > 1:
        print("warning: the variants report different input rows or symbol counts; rows/s are not comparable")

    def ratio(a: str, b: str, key: str) -> list[str] | None:
        if a not in med or b not in med or med[a][key] is None or med[b][key] is None:
            return None
        return [f"{key} {a} / {b}", f"{med[a][key] / med[b][key]:.2f}"]

    ratios = [
        ratio("rstack", "seed", "total"),
        ratio("rstack", "rstack-c1", "total"),
        ratio("rstack", "seed", "features"),
        ratio("rstack", "seed", "level0"),
        ratio("rstack-bl", "rstack", "total"),
        ratio("rstack-xgb", "rstack", "total"),
        ratio("rstack-xgb", "rstack", "level0"),
        ratio("rstack", "seed-cache", "total"),
        ratio("seed-cache", "seed", "total"),
        ratio("seed-cache", "seed", "level0"),
    ]
    rows = [r for r in ratios if r is not None]
    if "rstack" in med and "rstack-xgb" in med and None not in (med["rstack"]["roc_auc"], med["rstack-xgb"]["roc_auc"]):
        rows.append(["ROC-AUC rstack-xgb - rstack", f"{med['rstack-xgb']['roc_auc'] - med['rstack']['roc_auc']:+.4f}"])
    if rows:
        print_table("ratios of medians", ["ratio", "value"], rows, markdown)


def warm_up(work: Path, setup: Setup, letters: list[str]) -> None:
    """One untimed run per program ``letters`` start (rstack, the seed) on a tiny synthetic set, discarded: the first
    timed run would otherwise pay for reading Python packages and jars from a cold page cache alone
    (about 10 s of start-up seen on the first run of a chain, which was always variant a)."""
    data = synth(work / "warm-up", 4, 1500)
    for letter in dict.fromkeys("c" if letter in SEED_LETTERS else "a" for letter in letters):
        run_variant(letter, data, setup, work, f"warm-up-{letter}")
    shutil.rmtree(data, ignore_errors=True)


def compare(data: Path, setup: Setup, work: Path, letters: list[str], repeats: int) -> list[dict[str, Any]]:
    runs = []
    for i in range(1, repeats + 1):
        for letter in letters:
            runs.append({**run_variant(letter, data, setup, work, f"{letter}-{i}"), "repeat": i})
    return runs


def sweep(work: Path, setup: Setup, base: int, rows: int, repeats: int) -> list[dict[str, Any]]:
    """Variant a on 1x, 2x, 4x ``base`` synthetic symbols of ``rows`` candles each."""
    sets = {m: synth(work / f"sweep-{m}x", base * m, rows) for m in MULTIPLIERS}
    runs = []
    for i in range(1, repeats + 1):
        for m, data in sets.items():
            runs.append({**run_variant("a", data, setup, work, f"sweep-{m}x-{i}"), "multiplier": m, "repeat": i})
    return runs


def print_sweep(runs: list[dict[str, Any]], setup: Setup, rows_per_symbol: int, markdown: bool) -> None:
    for r in runs:
        r["net"] = r["total"] - r["startup"]
        r["per_symbol"] = r["net"] / r["symbols"]
        r["level0_per_symbol"] = r["level0"] / r["symbols"]
    keys = ("symbols", "total", "startup", "net", "per_symbol", "level0_per_symbol")
    med = {m: {k: _median([r for r in runs if r["multiplier"] == m], k) for k in keys} for m in MULTIPLIERS}
    first = med[MULTIPLIERS[0]]
    table = [
        [
            f"{m}x",
            f"{x['symbols']:.0f}",
            f"{x['total']:.1f}",
            f"{x['startup']:.1f}",
            f"{x['net']:.1f}",
            f"{x['per_symbol']:.2f}",
            f"{x['per_symbol'] / first['per_symbol']:.2f}",
            f"{x['level0_per_symbol']:.2f}",
            f"{x['level0_per_symbol'] / first['level0_per_symbol']:.2f}",
        ]
        for m, x in med.items()
    ]
    headers = ["size", "symbols", "total", "startup", "total-startup", "s/symbol", "ratio", "level0/symbol", "ratio"]
    title = f"scaling, rstack only: {rows_per_symbol} rows/symbol, batch size {setup.batch_size}, {setup.cores} cores"
    print_table(title, headers, table, markdown)
    print(
        "s/symbol = (total - startup) / symbols; ratio = against 1x. Start-up is excluded because it is a fixed "
        "cost per run, not per symbol; 1.00 everywhere would be linear scaling."
    )
    # Least squares of (total - startup) on symbols: the slope is the marginal cost of one more symbol, the
    # intercept what a run costs whatever its size; the largest residual says how straight the line is.
    xs = [med[m]["symbols"] for m in MULTIPLIERS]
    ys = [med[m]["net"] for m in MULTIPLIERS]
    slope, intercept = statistics.linear_regression(xs, ys)
    worst = max(abs(y - (intercept + slope * x)) / y for x, y in zip(xs, ys, strict=True))
    print(
        f"linear fit: total - startup = {intercept:.1f} s + {slope:.2f} s x symbols; "
        f"largest residual {100 * worst:.1f}% of the measured time"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="kline folder (default: a synthetic 8 x 4000 set)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "laptop.yaml")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2, help="seed: local[N]; rstack: 1 executor x N cores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="a,b,c", help="variants to run, e.g. a,c")
    parser.add_argument("--baselines", action="store_true", help="let rstack fit the config's baselines too")
    parser.add_argument("--json", type=Path, help="also write every run's record here")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first one untimed run of each program the variants start, on a tiny set (warms the page cache)",
    )
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--sweep-symbols", type=int, default=4, help="symbols at 1x")
    parser.add_argument("--sweep-rows", type=int, default=4000, help="rows per symbol in the sweep")
    parser.add_argument("--sweep-repeats", type=int, default=1)
    args = parser.parse_args()
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    if not args.only or set(args.only) - set(VARIANTS):
        parser.error(f"--only takes letters from {', '.join(VARIANTS)}, got {args.only}")
    if args.baselines and "f" in args.only:
        parser.error("--baselines turns the baselines on in a too, so f / a would be 1; drop one of them")
    if args.sweep_only and not args.sweep:
        parser.error("--sweep-only and --no-sweep contradict each other")
    if min(args.repeats, args.sweep_repeats, args.batch_size, args.cores, args.sweep_symbols, args.sweep_rows) < 1:
        parser.error("counts and sizes must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    setup = Setup(args.config.resolve(), args.batch_size, args.cores, args.baselines)
    work = Path(tempfile.mkdtemp(prefix="rstack-bench-"))
    results: dict[str, Any] = {"setup": {**asdict(setup), "config": str(setup.config)}}
    try:
        if args.warm_up:
            warm_up(work, setup, ["a"] if args.sweep_only else args.only)
        if not args.sweep_only:
            data = args.data.resolve() if args.data else synth(work / "data", 8, 4000)
            results["data"] = str(data)
            results["runs"] = compare(data, setup, work, args.only, args.repeats)
            print_comparison(results["runs"], setup, args.repeats, args.markdown)
        if args.sweep:
            results["sweep"] = sweep(work, setup, args.sweep_symbols, args.sweep_rows, args.sweep_repeats)
            print_sweep(results["sweep"], setup, args.sweep_rows, args.markdown)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"\nraw results: {args.json}")


if __name__ == "__main__":
    main()
