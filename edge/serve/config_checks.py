"""Checks of configuration values: each returns an error phrase ("must be ...") or None."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else "must be one of " + ", ".join(
        f'"{c}"' for c in choices
    )


def one_of_any_case(*choices: str) -> Check:
    upper = one_of(*choices)
    return lambda v: None if isinstance(v, str) and v.upper() in choices else upper(v)


def string(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def nonempty(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def endpoint(v: Any) -> str | None:
    ok = isinstance(v, str) and "://" in v and v.split("://", 1)[1]
    return None if ok else 'must be a ZeroMQ endpoint such as "tcp://127.0.0.1:5555"'


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "must be a positive integer"


def nonneg_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be an integer >= 0"


def port(v: Any) -> str | None:
    return None if _is_int(v) and 0 <= v <= 65535 else "must be a port number 0-65535"


def nonneg_number(v: Any) -> str | None:
    ok = (_is_int(v) or isinstance(v, float)) and math.isfinite(v) and v >= 0
    return None if ok else "must be a number >= 0"


def positive_number(v: Any) -> str | None:
    ok = (_is_int(v) or isinstance(v, float)) and math.isfinite(v) and v > 0
    return None if ok else "must be a number > 0"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def topics(v: Any) -> str | None:
    ok = isinstance(v, list | tuple) and v and all(isinstance(t, str) for t in v)
    return None if ok else 'must be a non-empty list of strings, e.g. ["tile/"]'


def number_pair(v: Any) -> str | None:
    ok = isinstance(v, list | tuple) and len(v) == 2 and all(
        (_is_int(x) or isinstance(x, float)) and math.isfinite(x) for x in v)
    return None if ok else "must be a list of two numbers [x, y]"


def rate(v: Any) -> str | None:
    ok = isinstance(v, float | int) and not isinstance(v, bool) and 0 < v < 0.01
    return None if ok else "must be a number in (0, 0.01)"


def layer(v: Any) -> str | None:
    return None if _is_int(v) and v >= -1 else "must be an integer >= -1"
