"""The HTML evaluation report of a real training run: embedded images, verdict, leakage audit, and a
headless-Chromium check that every image actually decodes in a browser."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rstack.errors import InputError
from rstack.models.metrics import average_precision
from rstack.reporting.curves import calibration_bins, f1_threshold, pr_points, roc_points
from rstack.reporting.report import summary_table, write_report
from rstack.reporting.tables import format_metrics, metrics_row
from rstack.training.driver import TrainResult

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_SRC = re.compile(r'<img\b[^>]*?\bsrc="([^"]*)"', re.IGNORECASE)
# Appended to a copy of the report: after every image has loaded or failed, record what the browser saw.
PROBE = """<script>
window.addEventListener('load', function () {
  document.body.setAttribute('data-images', JSON.stringify(Array.from(document.images).map(
    function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; })));
});
</script>"""


@pytest.fixture(scope="module")
def report(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The report of a copy of the shared run, so the run folder other tests check stays untouched."""
    run = tmp_path_factory.mktemp("report-run")
    shutil.copy2(trained.run_dir / "manifest.json", run / "manifest.json")
    shutil.copytree(trained.run_dir / "predictions", run / "predictions")
    summary = write_report(run)
    return run, summary, (run / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def browser() -> str:
    """A headless-capable Chromium; installed from Debian when missing and running as root (CI images)."""
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found:
        return found
    command = "apt-get update && apt-get install -y chromium"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for args in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                subprocess.run(args, check=True, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            pytest.fail(f"no Chromium found and `{command}` failed ({exc}); {detail[-800:]}")
        found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
        if found:
            return found
    pytest.fail(
        f"the report test needs a headless Chromium ({', '.join(BROWSERS)}) and none is on PATH; "
        f"install it with `sudo sh -c '{command}'` (Debian/Ubuntu) and rerun"
    )


def render_images(page: str, workdir: Path, browser: str) -> list[list[Any]]:
    """[complete, naturalWidth, naturalHeight] of every <img> once Chromium has loaded ``page``."""
    workdir.mkdir(parents=True, exist_ok=True)
    check = workdir / "check.html"
    assert "</body>" in page
    check.write_text(page.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    args = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={workdir / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        check.as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-images="([^"]*)"', done.stdout)
    assert found, f"Chromium exit {done.returncode}, no data-images in its DOM; stderr: {done.stderr[-1500:]}"
    return json.loads(html.unescape(found.group(1)))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:16]
    # The first chunk of a valid PNG is IHDR: length 13, then width and height as big-endian ints.
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", data[16:24])


def expected_verdicts(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """The verdict sentence(s) the manifest implies, derived here without rstack.reporting.report's helpers."""

    def auc(name: str) -> float | None:
        v = (metrics.get(name) or {}).get("roc_auc")
        return None if v is None or not math.isfinite(float(v)) else float(v)

    l2 = auc("level2")
    baselines = {n: a for n in metrics if n.startswith("baseline_") and (a := auc(n)) is not None}
    if l2 is None or not baselines:
        return ["No verdict:"]
    top = max(baselines.values())
    if l2 > top:
        return [
            f"The stack beats every baseline on test ROC-AUC: {l2:.4f} vs {top:.4f} for the best, {n}"
            for n, a in baselines.items()
            if a == top
        ]
    return [
        f"The stack does NOT beat {n}: {l2:.4f} vs {top:.4f} test ROC-AUC" for n, a in baselines.items() if a == top
    ]


def test_report_embeds_valid_pngs(report: tuple[Path, dict[str, Any], str]) -> None:
    run, summary, page = report
    assert (run / "report.html").is_file()
    srcs = IMG_SRC.findall(page)
    assert page.count("<img") == len(srcs) == len(summary["images"]) >= 6
    for src, name in zip(srcs, summary["images"], strict=True):
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert len(data) > 1024
        width, height = png_size(data)
        assert width > 100 and height > 100
        assert (run / "report" / name).read_bytes() == data
    # Self-contained: nothing for the browser to fetch.
    assert not re.search(r'<(link|script)\b|src="(?!data:)', page, re.IGNORECASE)
    assert not list(run.glob(".*.tmp")) and not list((run / "report").glob(".*.tmp"))


def test_verdict_matches_manifest(report: tuple[Path, dict[str, Any], str]) -> None:
    run, summary, page = report
    metrics = json.loads((run / "manifest.json").read_text())["metrics"]
    expected = expected_verdicts(metrics)
    assert any(e in summary["verdict"] for e in expected), (summary["verdict"], expected)
    assert any(html.escape(e) in page for e in expected)
    assert summary["roc_auc"]["level2"] == pytest.approx(metrics["level2"]["roc_auc"])
    table = summary_table(summary)
    assert table.splitlines()[-1] == f"verdict: {summary['verdict']}"
    assert all(name in table for name in metrics)


def test_leakage_audit_lists_cutoffs(report: tuple[Path, dict[str, Any], str]) -> None:
    run, _, page = report
    manifest = json.loads((run / "manifest.json").read_text())
    audit = page[page.index('id="leakage-audit"') :]
    for cutoff in manifest["cutoffs"]["cutoffs_utc"]:
        assert cutoff in audit
    for boundary, n in manifest["purged_rows"].items():
        assert f"purged rows at {boundary}</th><td>{n}</td>" in audit
    assert "L0-train rows only, per symbol" in audit


def test_f1_confusion_uses_l2_fit_rows(report: tuple[Path, dict[str, Any], str]) -> None:
    run, summary, page = report
    if (run / "predictions" / "l2_fit.parquet").is_file():
        assert 0.0 <= summary["f1_threshold"] <= 1.0
        assert "chosen on L2-fit rows" in summary_table(summary)
        caption = re.search(r'<figure id="fig-confusion">.*?<figcaption>(.*?)</figcaption>', page, re.DOTALL)
        assert caption and f"{summary['f1_threshold']:.4f}" in caption.group(1)
        assert "chosen on the L2-fit segment, never on test" in caption.group(1)
    else:
        assert summary["f1_threshold"] is None
        assert "predictions/l2_fit.parquet not found" in page


def test_images_render_in_chromium(report: tuple[Path, dict[str, Any], str], browser: str, tmp_path: Path) -> None:
    _, summary, page = report
    images = render_images(page, tmp_path, browser)
    assert len(images) == len(summary["images"])
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images


def test_chromium_check_catches_a_broken_image(
    report: tuple[Path, dict[str, Any], str], browser: str, tmp_path: Path
) -> None:
    _, _, page = report
    first = IMG_SRC.search(page)
    assert first
    broken = page.replace(first.group(1), "data:image/png;base64,bm90IGEgcG5n", 1)
    images = render_images(broken, tmp_path, browser)
    assert images[0][1] == 0, images[0]
    assert all(width > 0 for _, width, _ in images[1:])


def test_missing_inputs_name_the_file(trained: TrainResult, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest.json not found"):
        write_report(tmp_path)
    shutil.copy2(trained.run_dir / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(InputError, match=r"predictions/test\.parquet not found.*rstack train"):
        write_report(tmp_path)


# --------------------------------------------------------------------------- no run needed: curves and tables


def tied(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n).astype(float), np.round(rng.random(n), 1)


@pytest.mark.parametrize("seed", range(40))
def test_f1_threshold_matches_exact_counting_on_ties(seed: int) -> None:
    # Exact fractions, highest threshold first: ties must go to the higher threshold, as documented.
    y, p = tied(seed, 5 + seed)
    pos = int(y.sum())
    if pos == 0:
        assert f1_threshold(y, p) is None
        return
    best: tuple[float, Fraction] | None = None
    for t in np.unique(p)[::-1]:
        tp, fp = int(((p >= t) & (y == 1)).sum()), int(((p >= t) & (y == 0)).sum())
        f1 = Fraction(2 * tp, tp + fp + pos)
        if best is None or f1 > best[1]:
            best = (float(t), f1)
    assert best is not None
    assert f1_threshold(y, p) == (best[0], float(best[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_points_on_ties(seed: int) -> None:
    y, p = tied(seed, 300)
    fpr, tpr = roc_points(y, p)
    # One point per distinct score after (0, 0): the rates of the rule p >= t, highest t first.
    rules = [p >= t for t in np.unique(p)[::-1]]
    assert np.array_equal(fpr, [0.0] + [(r & (y == 0)).sum() / (y == 0).sum() for r in rules])
    assert np.array_equal(tpr, [0.0] + [(r & (y == 1)).sum() / (y == 1).sum() for r in rules])
    recall, precision = pr_points(y, p)
    assert (recall[0], recall[-1], precision[-1]) == (1.0, 0.0, 1.0)
    # Drawn steps-post by decreasing recall, the area under the steps is the legend's average precision.
    assert np.sum(-np.diff(recall) * precision[:-1]) == pytest.approx(average_precision(y, p), abs=1e-12)
    q = 0.9 * p + 0.042  # 0.042, 0.132, ...: off the bin edges, where binning conventions differ
    mean_p, rate = calibration_bins(y, q)
    bins = np.floor(q * 10).astype(int)
    assert np.allclose(rate, [y[bins == b].mean() for b in np.unique(bins)], atol=1e-12)
    assert np.allclose(mean_p, [q[bins == b].mean() for b in np.unique(bins)], atol=1e-12)


def test_one_label_class_draws_no_curve() -> None:
    p = np.array([0.2, 0.4, 0.6])
    assert all(len(a) == 0 for a in (*roc_points(np.zeros(3), p), *pr_points(np.zeros(3), p)))


def test_metrics_tables_share_one_row_builder() -> None:
    m = {
        "roc_auc": 0.71587,
        "pr_auc": 0.655,
        "log_loss": 0.6087,
        "brier": 0.2104,
        "rows": 8094,
        "positive_rate": 0.42587,
        "confusion": {"tp": 1845, "fp": 1060, "tn": 3587, "fn": 1602},
    }
    # The layout `rstack train` and `rstack runs show` have always printed.
    assert format_metrics({"level2": m}, 0.5).splitlines() == [
        "model                     ROC-AUC   PR-AUC  logloss   Brier     rows   pos%   tp/fp/tn/fn @0.5",
        "-" * 94,
        "level2                     0.7159   0.6550   0.6087  0.2104     8094   42.6   1845/1060/3587/1602",
    ]
    cells = ["level2", "0.7159", "0.6550", "0.6087", "0.2104", "8094", "42.6", "1845/1060/3587/1602"]
    assert metrics_row("level2", m) == cells
    # A one-class segment's NaN (null in manifest.json) shows as n/a in both tables.
    assert metrics_row("level2", {**m, "roc_auc": None})[1] == "n/a"
    assert "n/a" in format_metrics({"level2": {**m, "roc_auc": float("nan")}}, 0.5)
    summary = {"metrics": {"level2": {"roc_auc": 0.71587, "pr_auc": None, "brier": 0.2104}}, "verdict": "v"}
    assert summary_table(summary).splitlines() == [
        "model                       ROC-AUC   PR-AUC    Brier",
        "-" * 53,
        "level2                       0.7159      n/a   0.2104",
        "verdict: v",
    ]


def test_large_predictions_are_read_as_a_bounded_systematic_sample(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rstack.reporting.load import load_predictions

    n = 10_007
    table = pa.table({"symbol": ["AUSDT"] * n, "open_time": list(range(n)), "label": [1.0, 0.0] * 5003 + [1.0],
                      "l2": [i / n for i in range(n)]})  # fmt: skip
    path = tmp_path / "test.parquet"
    pq.write_table(table, path, row_group_size=777)  # groups that do not divide the step
    whole = load_predictions(path)
    assert len(whole) == n and "sampled_from" not in whole.attrs
    sample = load_predictions(path, max_rows=1000)
    assert sample.attrs["sampled_from"] == n
    # Every 11th row (ceil(10007 / 1000)), across row-group boundaries, and no more than asked for.
    assert sample["open_time"].tolist() == list(range(0, n, 11))
    assert len(sample) <= 1000


@pytest.mark.parametrize(
    ("l2_times", "cutoff", "why"),
    [
        # The one offending row is not in a 1-in-11 sample: the check must not depend on the sample.
        pytest.param([*range(0, 5000), 5001], 10**6, "times overlap the test rows", id="shared-row"),
        pytest.param([*range(0, 5000), 5001], 5001, "reach past the test cutoff", id="past-cutoff"),
        pytest.param(list(range(0, 5000)), 5001, None, id="disjoint"),
    ],
)
def test_l2_fit_overlap_is_decided_on_whole_files_not_samples(
    tmp_path: Path, l2_times: list[int], cutoff: int, why: str | None
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rstack.reporting.load import l2_fit_overlap, load_predictions

    def write(name: str, times: list[int]) -> Path:
        n = len(times)
        table = pa.table({"symbol": ["AUSDT"] * n, "open_time": times, "label": [i % 2 * 1.0 for i in range(n)],
                          "l2": [0.5] * n})  # fmt: skip
        pq.write_table(table, tmp_path / name, row_group_size=777)
        return tmp_path / name

    l2_fit = load_predictions(write("l2_fit.parquet", l2_times), max_rows=500)
    test = load_predictions(write("test.parquet", list(range(5001, 10_001))), max_rows=500)
    assert 5001 not in set(l2_fit["open_time"])  # the sample missed it
    manifest = {"cutoffs": {"cutoffs_ms": [0, 0, cutoff], "cutoffs_utc": ["a", "b", "c"]}}
    got = l2_fit_overlap(l2_fit, test, manifest)
    assert (got is None) if why is None else (got is not None and why in got)
