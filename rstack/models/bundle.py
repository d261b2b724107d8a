"""A saved run as a loadable, verified bundle, and the one scoring path shared with training.

Opening a bundle checks its manifest before any model is read: the format version, the feature
list against this code's, the Spark version, and a sha256 of every model file written at train
time. Only Spark ML's own loaders and JSON are used; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstack._io import KEY, MANIFEST, load_manifest
from rstack.config import Config, build_config
from rstack.data.discover import Dataset
from rstack.errors import InputError
from rstack.features.featurize import Featurized, to_features
from rstack.features.vol import lookback_bars
from rstack.features.windows import feature_names, needs_vol, warmup_rows
from rstack.models.estimators import with_probability

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

# 2: the scaled feature set (per-symbol scales from label_thresholds), Level-1 context inputs and
# Level-2 skip connections. A format-1 bundle (seed/extended features, Level 1 on the Level-0
# probabilities only) is read and scored as before.
FORMAT_VERSION = 2


def model_checksums(run_dir: Path, rels: list[str]) -> dict[str, str]:
    """sha256 of every file under the given model folders, keyed by path relative to the run."""
    out = {}
    for rel in rels:
        for path in sorted(Path(run_dir, rel).rglob("*")):
            if path.is_file() and not path.name.endswith(".crc"):
                out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Bundle:
    run_dir: Path
    manifest: dict[str, Any]
    config: Config
    _models: dict[str, PipelineModel] = field(default_factory=dict, repr=False)

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def level0_names(self) -> list[str]:
        return sorted(self.manifest["models"]["level0"])

    @property
    def context(self) -> list[str]:
        """Level 1's inputs beside the Level-0 probabilities (none in a format-1 bundle)."""
        inputs = self.manifest.get("level1", {}).get("inputs", [])
        return [c for c in inputs if not c.startswith("l0_")]

    @property
    def bar_ms(self) -> int:
        return int(self.manifest["cutoffs"]["bar_ms"])

    @property
    def with_vol(self) -> bool:
        """Whether scoring needs the time-based volatility columns and so the per-symbol scales (training's
        rule, without the baselines: serving scores none)."""
        return needs_vol(self.config.features, tuple(self.context), ())

    @property
    def lookback(self) -> int:
        """Rows of history each symbol needs before its features are defined."""
        rows = warmup_rows(self.config.features, self.config.label.horizon)
        if self.with_vol:
            rows = max(rows, lookback_bars(self.config.features, self.config.label.horizon, self.bar_ms))
        return rows

    @classmethod
    def open(cls, run_dir: Path | str) -> Bundle:
        run_dir = Path(run_dir).resolve()
        if not (run_dir / MANIFEST).is_file():
            raise InputError(f"{run_dir} is not an rstack run (no {MANIFEST}); pass a folder `rstack train` wrote")
        manifest = load_manifest(run_dir)
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(
                f"{run_dir / MANIFEST}: bundle format {version!r} is newer than this rstack reads "
                f"({FORMAT_VERSION}); upgrade rstack to load it"
            )
        config = build_config(manifest["config"])
        expected = feature_names(config.features)
        if manifest["features"] != expected:
            raise InputError(
                f"{run_dir / MANIFEST}: features {manifest['features']} differ from what this rstack computes "
                f"for feature_set {config.features.feature_set!r} ({expected}); retrain with this version"
            )
        import pyspark

        trained = str(manifest["versions"].get("pyspark", ""))
        if trained.split(".")[:2] != pyspark.__version__.split(".")[:2]:
            raise InputError(
                f"{run_dir / MANIFEST}: models were saved by pyspark {trained}, this is pyspark "
                f"{pyspark.__version__}; install pyspark {'.'.join(trained.split('.')[:2])}.x or retrain"
            )
        recorded = manifest.get("checksums") or {}
        if not recorded:
            raise InputError(f"{run_dir / MANIFEST}: no model checksums recorded; retrain with this rstack")
        actual = model_checksums(run_dir, cls.model_dirs(manifest))
        for rel, digest in sorted(recorded.items()):
            if actual.get(rel) != digest:
                state = "is missing" if rel not in actual else "was changed after training"
                raise InputError(f"{run_dir / rel} {state} (sha256 differs from the manifest); restore the run")
        extra = sorted(set(actual) - set(recorded))
        if extra:
            raise InputError(f"{run_dir / extra[0]} is not part of the trained bundle; remove it")
        return cls(run_dir, manifest, config)

    @staticmethod
    def model_dirs(manifest: dict[str, Any]) -> list[str]:
        m = manifest["models"]
        return [*m["level0"].values(), m["level1"], m["level2"]]

    def model(self, name: str) -> PipelineModel:
        """``level1``, ``level2`` or a Level-0 batch name, loaded once with ``PipelineModel.load``."""
        from pyspark.ml import PipelineModel

        if name not in self._models:
            models = self.manifest["models"]
            rel = models["level0"].get(name) or models[name]
            self._models[name] = PipelineModel.load(str(self.run_dir / rel))
        return self._models[name]

    def score_features(self, df: DataFrame, threshold: float | None = None) -> DataFrame:
        """Every level's probability for rows whose features are defined (training's code path)."""
        from pyspark.sql import functions as F

        out = df.select(*KEY, *self.features, *[c for c in self.context if c not in self.features])
        for name in self.level0_names:
            out = with_probability(self.model(name), out, f"l0_{name}")
        out = with_probability(self.model("level1"), out, "l1")
        out = with_probability(self.model("level2"), out, "l2")
        cut = self.config.eval.threshold if threshold is None else threshold
        known = list(self.manifest["symbols"])
        return out.select(
            *KEY,
            *[f"l0_{n}" for n in self.level0_names],
            "l1",
            "l2",
            (F.col("l2") >= F.lit(cut)).cast("int").alias("predicted"),
            # Level-0 models are symbol-agnostic, so unseen symbols are scored, but flagged.
            F.col("symbol").isin(known).alias("known_symbol"),
        )

    def checked_features(
        self,
        klines: DataFrame,
        dataset: Dataset | None = None,
        extra: tuple[str, ...] = (),
        grid_only: bool = False,
        cached: list[DataFrame] | None = None,
    ) -> Featurized:
        """Training's path from klines to features (``featurize.to_features``) with this run's interval
        and per-symbol scales: the same row checks, repairs and errors as ``rstack train``."""
        scales = {str(k): float(v) for k, v in self.manifest["label_thresholds"].items()} if self.with_vol else None
        return to_features(
            klines,
            dataset,
            self.config,
            self.with_vol,
            labelled=False,
            interval=self.bar_ms,
            scales=scales,
            extra=extra,
            grid_only=grid_only,
            cached=cached,
        )

    def featurize(self, klines: DataFrame) -> DataFrame:
        """Features plus ``_status`` (``ok``, ``warmup``, ``invalid``, ``unknown_symbol``) for normalized
        klines (symbol, open_time ms, OHLCV doubles); raises InputError where training would."""
        return self.checked_features(klines).frame

    def predict(self, klines: DataFrame, threshold: float | None = None) -> DataFrame:
        """Probabilities for every kline whose features are defined; warm-up and invalid rows are
        left out here and counted by :func:`rstack.serving.predict.predict_dir`."""
        from pyspark.sql import functions as F

        feats = self.featurize(klines)
        return self.score_features(feats.where(F.col("_status") == "ok"), threshold)
