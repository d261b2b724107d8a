"""What a tuning trial varies: a search space of dotted config keys, checked before any trial runs.

A space maps a key (``level0.max_depth``) to a list of choices or to a range ``{low, high}``
(``log: true`` for a log scale, integers when both ends are). Only keys that shape the model may be
searched: the label, the split, how a run executes and where it is tracked are fixed by the base
config, so every trial predicts the same target on the same segments.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from rstack.config import EXECUTION_ONLY, Config
from rstack.errors import ConfigError
from rstack.features.windows import check_context

log = logging.getLogger("rstack")

# Sections a trial may vary; label/split/runtime/tracking/eval would change the question, not the answer.
SEARCHABLE = ("features", "level0", "level1", "level2")

# The default space: the seed's learners' sizes around their defaults, the meta levels' options, and
# the windows of the base's own feature set (a key another feature set reads would change nothing).
DEFAULT_SPACE: dict[str, Any] = {
    "level0.num_trees": [50, 100, 150],
    "level0.max_depth": [6, 8, 10, 12],
    "level0.batch_size": [4, 10, 16],
    # Regularization of the forests: larger leaves average more of a noisy label; more features per
    # split offer the few strong volatility features more often. Not half of them: 13 of 25 ran the
    # default 1g executor out of heap on binance-5m's million candles (docs/quality.md).
    "level0.min_instances_per_node": [1, 5, 20, 50],
    "level0.feature_subset_strategy": ["auto", "onethird"],
    "level1.num_trees": [25, 50, 100],
    "level1.max_depth": [4, 6, 8],
    "level1.min_instances_per_node": [1, 20, 100],
    "level2.reg_param": {"low": 1e-4, "high": 0.1, "log": True},
    "level2.elastic_net_param": {"low": 0.0, "high": 1.0},
}
FEATURE_SPACE: dict[str, dict[str, Any]] = {
    "scaled": {
        "features.mid_windows": [["4h", "3d"], ["12h", "3d"], ["4h", "12h", "3d"]],
        "features.seasonal_days": [3, 7, 14],
    },
    "extended": {"features.rv_windows": [[5, 10, 20, 50], [5, 20, 100]], "features.volume_z_window": [10, 20, 50]},
    "seed": {},  # the seed's twelve features have no windows to search
}


def default_space(base: Config) -> dict[str, Any]:
    return {**DEFAULT_SPACE, **FEATURE_SPACE[base.features.feature_set]}


@dataclass(frozen=True)
class Param:
    key: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False  # a range of whole numbers (both ends written as integers, the key an integer)

    def draw(self, rng: random.Random) -> Any:
        if self.choices:
            return rng.choice(self.choices)
        if self.log:
            import math

            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else value

    def tune_domain(self) -> Any:
        """The same parameter as a Ray Tune domain (for the Optuna searcher); :meth:`value` decodes it."""
        from ray import tune

        if self.choices:  # by index: Optuna's categories must be scalars, a choice may be a list
            return tune.choice(list(range(len(self.choices))))
        if self.integer:
            return (tune.lograndint if self.log else tune.randint)(int(self.low), int(self.high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def value(self, drawn: Any) -> Any:
        return self.choices[int(drawn)] if self.choices else drawn

    def index_of(self, value: Any) -> Any:
        """``value`` as :meth:`tune_domain` draws it (a choice's index), for the base config's point."""
        if not self.choices:
            return value
        wanted = tuple(value) if isinstance(value, list) else value
        return self.choices.index(wanted) if wanted in self.choices else None


def parse_space(raw: Mapping[str, Any], base: Config, where: str = "the search space") -> list[Param]:
    """Check every key and value of ``raw`` against the config before a trial spends a minute on it."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where} must be a non-empty mapping of config keys, e.g. level0.max_depth: [6, 8]")
    params = []
    for key, spec in raw.items():
        section = str(key).partition(".")[0]
        if key in EXECUTION_ONLY:
            raise ConfigError(
                f"{where}: {key!r} changes how a run executes, not what it learns; set it in the base config"
            )
        if section not in SEARCHABLE:
            raise ConfigError(
                f"{where}: {key!r} cannot be tuned; search keys of {', '.join(SEARCHABLE)} (the label, "
                "split, evaluation and runtime are fixed by the base config)"
            )
        if isinstance(spec, list) and spec:
            param = Param(key, choices=tuple(tuple(c) if isinstance(c, list) else c for c in spec))
        elif isinstance(spec, Mapping) and set(spec) - {"log"} == {"low", "high"}:
            low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
            if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
                raise ConfigError(f"{where}: {key}: give numbers with low < high, got low={low!r}, high={high!r}")
            if log and low <= 0:
                raise ConfigError(f"{where}: {key}: a log range needs low > 0, got {low!r}")
            current = _value(base, str(key))  # None (a key the config lacks): refused below
            whole = all(isinstance(x, int) and not isinstance(x, bool) for x in (low, high, current))
            param = Param(key, low=float(low), high=float(high), log=log, integer=whole)
        else:
            raise ConfigError(
                f"{where}: {key}: {spec!r} is neither a list of choices nor a range; write [a, b, ...] "
                "or {low: 0.001, high: 0.1, log: true}"
            )
        if param.choices:  # as the config reads each (YAML's 0.5 is the text "0.5" for a text key), so
            # that the base's own value is found among them and two spellings of one value are one choice
            param = replace(param, choices=tuple(dict.fromkeys(_as_read(base, str(key), c) for c in param.choices)))
        # Both ends of a range, every choice: a value a run would refuse fails here, not in trial 7.
        for value in param.choices or (param.draw(random.Random(0)), param.low, param.high):
            value = round(value) if param.integer and not param.choices else value
            check_context(base.replace({key: value}))
        params.append(param)
    return params


def _value(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``level0.max_depth``) in ``cfg``, as its record writes it; None if absent."""
    section, _, field = key.partition(".")
    return cfg.to_dict()[section].get(field)


def _as_read(base: Config, key: str, value: Any) -> Any:
    read = _value(base.replace({key: value}), key)
    return tuple(read) if isinstance(read, list) else read  # a choice is kept hashable, as parse_space keeps it


def load_space(path: Path | None, base: Config) -> list[Param]:
    if path is None:
        return parse_space(default_space(base), base, "the default search space")
    if not path.is_file():
        raise ConfigError(f"search space {path} does not exist; pass a YAML file of key: choices")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {exc}") from exc
    return parse_space(raw, base, f"search space {path}")


def _point(draw: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(draw.items()))


def space_size(params: list[Param]) -> int | None:
    """How many distinct configs the space holds; None when a real-valued range makes it unbounded."""
    size = 1
    for p in params:
        if p.choices:
            size *= len(set(p.choices))
        elif p.integer:
            size *= int(p.high) - int(p.low) + 1
        else:
            return None
    return size


def check_trials(params: list[Param], trials: int, base: Config) -> None:
    """Refuse more trials than the space has configs to try, before Ray starts (trial 0 is the base)."""
    size = space_size(params)
    if size is None:
        return
    others = size - (1 if _holds(params, base_values(base, params)) else 0)
    if trials - 1 > others:
        raise ConfigError(
            f"--trials {trials}: the search space holds only {others} configs besides the base config's; "
            f"use --trials {others + 1} or fewer, or widen the space"
        )


def _holds(params: list[Param], point: Mapping[str, Any]) -> bool:
    """Whether every value of ``point`` is one of its key's choices or inside its range."""
    return all(p.index_of(point[p.key]) is not None if p.choices else p.low <= point[p.key] <= p.high for p in params)


def draw_trials(
    params: list[Param], count: int, seed: int, taken: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """``count`` distinct configs drawn at random, none of them one of ``taken`` (the base config's):
    a trial spent on a config already scored tells nothing. The same seed draws the same trials."""
    rng = random.Random(seed)
    seen = {_point(t) for t in taken or []}
    size = space_size(params)
    if size is not None and size <= 100_000:  # a finite space: sample its untried configs, never stall
        values = [p.choices or tuple(range(int(p.low), int(p.high) + 1)) for p in params]
        points = [dict(zip((p.key for p in params), v, strict=True)) for v in itertools.product(*values)]
        untried = [d for d in points if _point(d) not in seen]
        if count > len(untried):
            raise ConfigError(f"the search space holds {len(untried)} untried configs; ask at most that many trials")
        return rng.sample(untried, count)
    draws: list[dict[str, Any]] = []
    for _ in range(count):
        for _attempt in range(10_000):
            draw = {p.key: p.draw(rng) for p in params}
            if _point(draw) not in seen:
                break
        else:
            raise ConfigError(f"the search space ran out of new configs after {len(draws)} draws; ask fewer trials")
        seen.add(_point(draw))
        draws.append(draw)
    return draws


def base_values(base: Config, params: list[Param]) -> dict[str, Any]:
    """The base config's own value of every searched key: the study's reference trial."""
    return {p.key: _value(base, p.key) for p in params}


def covering_base(params: list[Param], base: Config) -> list[Param]:
    """``params`` widened to hold the base config's own values, so a searcher that can only evaluate
    points of its space (Optuna) can evaluate the base as its first trial. Logged when it widens."""
    out = []
    for p, value in zip(params, base_values(base, params).values(), strict=True):
        if p.choices and p.index_of(value) is None:
            p = replace(p, choices=(*p.choices, tuple(value) if isinstance(value, list) else value))
        elif not p.choices and not p.low <= value <= p.high:
            p = replace(p, low=min(p.low, value), high=max(p.high, value))
        else:
            out.append(p)
            continue
        log.info("tune: %s widened to hold the base config's %r, so the search can start from it", p.key, value)
        out.append(p)
    return out


def decode(params: list[Param], drawn: dict[str, Any]) -> dict[str, Any]:
    """A searcher's draw (choices by index, see :meth:`Param.tune_domain`) as config values."""
    return {p.key: p.value(drawn[p.key]) for p in params}
