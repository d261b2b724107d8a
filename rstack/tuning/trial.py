"""One ``rstack tune`` trial: the base config with its drawn keys, trained fold by fold on the study's
Spark host. Imported only when a study runs (it needs Ray Tune at import: the trainable's base class).

A class trainable rather than a function one: its ``__repr__`` (the trial's name) is what Ray's actor
table and the dashboard's actor view show for the trial's actor, where a function trainable shows the
same ``ImplicitFunc`` for every trial.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from rstack.config import Config, build_config
from rstack.errors import TrainingError
from rstack.models.metrics import finite
from rstack.training.driver import train
from rstack.tuning.results import METRIC
from rstack.tuning.space import decode

if TYPE_CHECKING:
    from rstack.cluster.runtime import Runtime


def score_fold(data_dir: Path, models_dir: Path, cfg: Config, runtime: Runtime, k: int, until: float) -> float:
    """Train the stack on validation fold ``k`` (the candles before ``until`` of the time range) and
    return its Level-2 ROC-AUC. A plain function: the trainable below only wires it to Ray Tune."""
    result = train(data_dir, models_dir, cfg.replace({"split.until": until}), runtime)
    auc = finite(result.manifest["metrics"]["level2"]["roc_auc"])
    if auc is None:
        raise TrainingError(
            f"fold {k} (candles before {until:.3f} of the time range): Level-2 ROC-AUC is undefined, the "
            "fold's test period holds one label class; use fewer --folds or more data"
        )
    return auc


def trial_config(config: dict[str, Any], spec: dict[str, Any]) -> Config:
    """The base config with this trial's keys: a random study's draw by index, or Optuna's point."""
    params = spec["draws"][config["index"]] if "draws" in spec else decode(spec["params"], config["params"])
    return build_config(spec["base"]).replace({**params, **spec["fixed"]})


class RstackTrial(tune.Trainable):
    """A study's trial: each ``step`` trains the next validation fold and reports the mean so far. The
    first step builds its config and joins the running Ray and the study's Spark host: ``setup`` runs
    before Tune counts the trial as started, and a failure there would have no time in trials.csv."""

    # tune.with_parameters hands ``spec`` to setup as a keyword: the override adds it on purpose.
    def setup(self, config: dict[str, Any], spec: dict[str, Any]) -> None:  # type: ignore[override]
        self.spec, self.point = spec, config
        self.scores: list[float] = []
        self.runtime: Runtime | None = None

    def step(self) -> dict[str, Any]:
        if self.runtime is None:
            from rstack.cluster.runtime import Runtime

            self.cfg = trial_config(self.point, self.spec)
            # Joins this Ray and the study's Spark host, stops neither; its host tasks show as trial_NNNNN:...
            self.runtime = Runtime(self.cfg.runtime, task_prefix=self.trial_name)
            self.runtime.start()
        ends: list[float] = self.spec["ends"]
        k = len(self.scores) + 1
        models = Path(self.spec["out"]) / "trials" / self.trial_name
        auc = score_fold(Path(self.spec["data_dir"]), models, self.cfg, self.runtime, k, ends[k - 1])
        self.scores.append(auc)
        return {"fold": k, "fold_auc": auc, METRIC: statistics.fmean(self.scores), "done": k == len(ends)}

    # A class trainable must save: Tune saves one at its end by default (an ASHA stop is an end too). The
    # fold scores are its whole state; nothing in a study restores a trial, but Tune's restore could.
    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"scores": self.scores}

    def load_checkpoint(self, checkpoint: dict[str, Any] | None) -> None:
        self.scores = [float(s) for s in (checkpoint or {}).get("scores", [])]

    def __repr__(self) -> str:
        return str(self.trial_name)
