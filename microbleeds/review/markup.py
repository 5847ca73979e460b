"""HTML building blocks shared by the scan page and the cohort page: escaping, number text, the
time stamp, and the CSS / JavaScript files in ``assets/`` (inlined, so a page needs no network)."""

from __future__ import annotations

import datetime as _dt
import functools
import html
import math
from importlib import resources

from .decisions import as_float


def escape(value) -> str:
    """HTML text of ``value`` (None as empty), safe inside text and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value, digits=2, unit="") -> str:
    """A table cell as a number with at most ``digits`` decimals (trailing zeros dropped) and
    ``unit``; ``n/a`` when empty, any other non-number as escaped text."""
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a" if value in (None, "", "n/a", "nan") else escape(value)
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{v:.0f}"
    return text + unit


def generated() -> str:
    """The time a page is written, to the minute (UTC), e.g. ``2026-12-01 07:54 UTC``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@functools.cache
def asset(name: str) -> str:
    """Text of ``assets/<name>`` (CSS or JavaScript inlined into the pages)."""
    return resources.files(__package__).joinpath("assets").joinpath(name).read_text(encoding="utf-8")
