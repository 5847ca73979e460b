"""Tables and JSON: TSV text with one cell rule, JSON with one rule for numpy values and NaN.

Cells: ``None`` and NaN are written ``n/a`` (BIDS), booleans ``true``/``false``, floats with a
fixed format chosen by the table (4 decimals for result tables). Readers give one-line
:class:`~microbleeds.errors.InputError` messages naming the file.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError

NA = "n/a"


def format_value(value, float_format=".4f", empty=""):
    """TSV text of one cell: floats with ``float_format``, booleans lower case, NaN/None as n/a,
    an empty string as ``empty`` (``n/a`` in BIDS Derivatives); tabs and line breaks inside text
    become spaces."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if isinstance(value, str) and value == "":
        return empty
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format)
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")  # one cell, one line


def tsv_text(rows, columns, float_format=".4f", empty=""):
    """A TSV table (header + one line per dict in ``rows``) as text; missing keys and empty
    strings are written ``empty``."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(format_value(row.get(c, ""), float_format, empty) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def read_tsv(path) -> tuple[list[str], list[dict]]:
    """Read a tab-separated table with a header line.

    Returns the column names and the rows as dicts of strings. Raises InputError when the file
    is missing or has no header. A row with fewer cells than the header gets "" for the rest.
    """
    columns, numbered = read_tsv_rows(path, strict=False)
    return columns, [row for _, row in numbered]


def read_tsv_rows(path, strict: bool = True) -> tuple[list[str], list[tuple[int, dict]]]:
    """The table as (columns, [(line number, row)]); blank lines are skipped.

    With ``strict``, a row with fewer or more cells than the header raises InputError naming the
    line (a row cut short or with a stray tab would otherwise be read with shifted cells).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "table does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # BIDS: no quoting
            columns = [c.strip() for c in next(reader, None) or []]
            rows = []
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if strict and len(cells) != len(columns):
                    raise InputError(path, f"line {reader.line_num}: {len(cells)} cell(s) but the header "
                                           f"has {len(columns)} ({'missing' if len(cells) < len(columns) else 'extra'}"
                                           f" tab-separated cells); not applied")
                cells = cells + [""] * (len(columns) - len(cells))
                rows.append((reader.line_num, {c: v.strip() for c, v in zip(columns, cells)}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read table ({exc})") from None
    if not columns or columns == [""]:
        raise InputError(path, "empty table: no header line")
    return columns, rows


def jsonable(value):
    """``value`` with numpy scalars and arrays as Python types and NaN as None (JSON null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def json_text(data):
    """Indented JSON text of ``data`` (see :func:`jsonable`), with a final newline."""
    return json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n"


def read_json(path) -> dict:
    """Read a JSON object with a clear InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "JSON is not an object")
    return data
