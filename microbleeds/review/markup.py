"""HTML building blocks shared by the scan page and the cohort page: escaping for each context
(HTML text and quoted attributes, JSON inside ``<script>``, relative links), the pages'
Content-Security-Policy, number text, the page's author line, and the CSS / JavaScript files in
``assets/`` (inlined, so a page needs no network)."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import math
from importlib import resources
from urllib.parse import quote

from .decisions import as_float


def escape(value) -> str:
    """HTML text of ``value`` (None as empty), safe inside text and quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(data) -> str:
    """JSON text of ``data`` safe inside ``<script type=application/json>``: ``<``, ``>`` and
    ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` (so no ``</script>`` or ``<!--`` can end or
    derail the script element), U+2028 / U+2029 escaped too; ``JSON.parse`` reads it unchanged."""
    text = json.dumps(data)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def relative_href(relative_path) -> str:
    """An ``href`` value for a file at ``relative_path`` (a relative POSIX path): each segment
    percent-encoded (``:`` included, so no segment can read as a URL scheme such as
    ``javascript:``), escaped for a quoted attribute."""
    parts = str(relative_path).split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {relative_path!r}")
    return escape("/".join(quote(p, safe="") for p in parts))


def content_security_policy(*scripts: str) -> str:
    """The ``<meta>`` Content-Security-Policy of a self-contained page whose only scripts are
    the inline ``scripts`` (allowed by their SHA-256): inline CSS, ``data:`` images, nothing
    fetched, no plug-ins, no ``<base>``, no form submission."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() + "'"
                      for s in scripts)
    policy = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data:; "
              "base-uri 'none'; form-action 'none'; object-src 'none'")
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'


def number(value, digits=2, unit="") -> str:
    """A table cell as a number with at most ``digits`` decimals (trailing zeros dropped) and
    ``unit``; ``n/a`` when empty, any other non-number as escaped text."""
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a" if value in (None, "", "n/a", "nan") else escape(value)
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{v:.0f}"
    return text + unit


def generated() -> str:
    """Who wrote a page, e.g. ``by microbleeds 0.1.0``: no clock time, so that a re-run writes the
    same bytes (the results' own files say what was run; the file's mtime says when)."""
    from .. import __version__

    return f"by microbleeds {__version__}"


@functools.cache
def asset(name: str) -> str:
    """Text of ``assets/<name>`` (CSS or JavaScript inlined into the pages)."""
    return resources.files(__package__).joinpath("assets").joinpath(name).read_text(encoding="utf-8")
