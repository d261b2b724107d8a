"""The value types the config sections are made of: each an annotation that coerces and checks one
value (``checks.translate`` turns a failed check into the house message)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

from rstack.config.checks import is_duration, is_feature_count, listed, not_bool, nullable, rule

Int = Annotated[int, BeforeValidator(not_bool)]
Count = Annotated[Int, Field(ge=1)]
Depth = Annotated[Int, Field(ge=1, le=30, description="Spark's limit")]
Open01 = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(gt=0, le=1)]
# A tree learner's features per split, as Spark names them: a rule (auto: sqrt for a forest, all for one
# tree), a whole number of features or a share of them in (0, 1].
FEATURE_RULES = ("auto", "all", "sqrt", "log2", "onethird")

Duration = Annotated[str, rule(is_duration, "write a duration such as 4h or 7d")]
Listed = BeforeValidator(listed)
SubsetStrategy = Annotated[
    str,
    rule(
        lambda v: v in FEATURE_RULES or is_feature_count(v),
        f"use one of {', '.join(FEATURE_RULES)}, a whole number of features (1 is one feature) or a share in "
        "(0, 1] with a point (0.5; 1.0 is all)",
    ),
]
# Rows each child of a split keeps at least (Spark's minInstancesPerNode): larger leaves average more
# labels, which a noisy target such as next-bars volatility can use.
MinLeaf = Annotated[Int, Field(ge=1, description="rows")]
Nullable = BeforeValidator(nullable)
BarWindows = Annotated[
    tuple[Int, ...], Listed, rule(lambda w: len(w) >= 2 and min(w) >= 2, "give at least two windows, each >= 2 bars")
]
BindAddress = Annotated[
    str,
    rule(
        lambda a: a == "auto" or re.fullmatch(r"[0-9A-Za-z.:-]+", a) is not None,
        "use an IP address or host name (127.0.0.1 keeps Spark local) or auto",
    ),
]
