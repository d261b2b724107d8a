"""How config values are checked and how a failed check reads.

The helpers the sections' annotations use beside pydantic's own constraints, and ``translate``, which
turns pydantic's errors into the house message: ``level0.num_trees = 0 is invalid: use >= 1 (from
environment variable RSTACK_LEVEL0__NUM_TREES)``. No pydantic wording reaches the user.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import AfterValidator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")


class Invalid(ValueError):
    """A broken rule. A model validator names the ``key`` (relative to its model) and the ``value``."""

    def __init__(self, rule: str, key: str = "", value: Any = None) -> None:
        super().__init__(rule)
        self.rule, self.key, self.value = rule, key, value


def rule(ok: Callable[[Any], bool], text: str) -> AfterValidator:
    """A check for an annotation: values failing ``ok`` are invalid, ``text`` says what to use instead."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise Invalid(text)
        return value

    return AfterValidator(check)


def not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read `num_trees: yes` as 1
        raise PydanticCustomError("int_type", "an integer")
    return value


def listed(value: Any) -> Any:
    """Env vars and flags write lists as ``a,b c``; an empty value is the empty list."""
    return [v for v in value.replace(",", " ").split() if v] if isinstance(value, str) else value


def nullable(value: Any) -> Any:
    """Env vars and flags write null as ``""``, ``none`` or ``null``."""
    return None if isinstance(value, str) and value.strip().lower() in ("", "none", "null") else value


def is_duration(text: str) -> bool:
    return DURATION.match(text.lower()) is not None


def is_feature_count(text: str) -> bool:
    """A whole number of features (1 to 2^31 - 1) or a share of them in (0, 1] written with a point, as
    Spark's featureSubsetStrategy reads a value that is not one of its rules (an int first, then a
    double); digits only, so nothing passes here that Spark would refuse at fit time."""
    if re.fullmatch(r"[0-9]+", text):
        return 1 <= int(text) < 2**31
    return re.fullmatch(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*", text) is not None and 0 < float(text) <= 1


_EXPECTED = {
    **dict.fromkeys(("int_type", "int_parsing", "int_parsing_size", "int_from_float"), "an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "a number"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "true/false"),
    "string_type": "text",
    "tuple_type": "a list",
}
_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def translate(
    errors: list[ErrorDetails], model: Any, nested: Mapping[str, Mapping[str, Any]], sources: Mapping[str, str]
) -> str:
    """pydantic's ``errors`` validating ``model(**nested)``: one message per bad key, naming its value, the
    rule and (from ``sources``, dotted key -> where it was set) where the value came from."""
    lines: dict[str, str] = {}
    for err in errors:
        problem = err.get("ctx", {}).get("error")
        loc = [str(p) for p in err["loc"]]
        if isinstance(problem, Invalid) and problem.key:  # a model validator's: loc is the model's
            loc += problem.key.split(".")
        key = ".".join(loc[:2])
        if key not in lines:
            lines[key] = _message(err, loc, problem, _fields(model), nested) + source(key, sources)
    return "; ".join(lines.values())


def source(key: str, sources: Mapping[str, str]) -> str:
    """`` (from WHERE)`` for a dotted key, or a section (any of its keys); empty when not known."""
    where = sources.get(key) or next((s for k, s in sources.items() if k.startswith(f"{key}.")), "")
    return f" (from {where})" if where else ""


def _fields(model: Any) -> dict[str, FieldInfo]:
    return model.__pydantic_fields__


def _message(
    err: ErrorDetails, loc: list[str], problem: Any, sections: dict[str, FieldInfo], nested: Mapping[str, Any]
) -> str:
    if len(loc) == 1:  # only an unknown keyword has no field
        return f"unknown config section {loc[0]!r}; known sections: {', '.join(sections)}"
    key, name, kind = f"{loc[0]}.{loc[1]}", loc[1], err["type"]
    fields = _fields(sections[loc[0]].annotation)
    if name not in fields:
        return f"unknown config key {key}; known keys: {', '.join(fields)}"
    info, hint = fields[name], fields[name].annotation
    if isinstance(problem, Invalid) and problem.key:
        value = problem.value
    else:  # as written: the whole list when one of its items is wrong
        value = nested.get(loc[0], {}).get(name, err["input"])
    if kind in ("missing", "too_short", "too_long") and typing.get_origin(hint) is tuple:  # a fixed-length tuple
        return f"{key}: expected {len(typing.get_args(hint))} values, got {len(err['input'])}: {value!r}"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {err['input']!r}"
    if isinstance(problem, Invalid):
        text = problem.rule
    elif kind == "literal_error" and typing.get_origin(hint) is tuple:
        text = f"use any of {', '.join(_literals(hint))} (or an empty list)"
    elif kind == "literal_error":
        text = f"use one of {', '.join(_literals(hint))}"
    elif bounds := {k: getattr(m, k) for m in info.metadata for k in _SIGNS if hasattr(m, k)}:
        text = _range(bounds) + (f" ({info.description})" if info.description else "")
    else:
        text = "see configs/laptop.yaml for the values it takes"
    return f"{key} = {value!r} is invalid: {text}"


def _literals(hint: Any) -> list[str]:
    """The choices of a Literal, of an optional one (null first) or of a tuple of them."""
    if typing.get_origin(hint) is Literal:
        return [str(a) for a in typing.get_args(hint)]
    names = [x for a in typing.get_args(hint) for x in _literals(a)]
    return ["null", *names] if type(None) in typing.get_args(hint) else names


def _range(bounds: dict[str, Any]) -> str:
    """``{"ge": 1}`` -> use >= 1; ``{"ge": 1, "le": 30}`` -> use 1..30; ``{"gt": 0, "le": 1}`` -> (0, 1]."""
    if len(bounds) == 1:
        return " ".join(f"use {_SIGNS[k]} {v}" for k, v in bounds.items())
    if "ge" in bounds and "le" in bounds:
        return f"use {bounds['ge']}..{bounds['le']}"
    low = f"[{bounds['ge']}" if "ge" in bounds else f"({bounds['gt']}"
    high = f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})"
    return f"use a value in {low}, {high}"
