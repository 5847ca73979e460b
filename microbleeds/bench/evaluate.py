"""Score detections against ground truth: one-to-one matching, sensitivity, precision, agreement.

The detector writes one output folder per scan (``lesions.tsv``, see ``docs/contract.md``); a
phantom comes with ``<name>_truth.tsv``.  This module pairs the two, matches detected lesions to
true microbleeds (CMBs) and reports detection and measurement scores per scan and pooled.

Matching
--------
Detected lesions are matched to truth rows one-to-one with the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`) on the Euclidean distance between world
(scanner RAS+) centroids, in mm.  A pair counts only if its distance is <= ``max_distance_mm``
(3 mm by default); pairs farther apart are *forbidden*, not just costly: the assignment first
maximises the number of allowed pairs and, among assignments with that many pairs, minimises
the summed distance.  So a detection lying between two truths goes to the nearer one unless
that would leave the other truth unmatched while a different detection could have taken it.

Matching is done in two rounds:

1. detections vs truth rows of type ``cmb``; matched pairs are true positives (TP), unmatched
   ``cmb`` truths are false negatives (FN);
2. the detections left over vs truth rows of type ``calcification``, with the same rule and
   limit.  A detection matched here is a *calcification reported as CMB*.

3. the detections still left vs *extended mimics* (``cavernoma``, ``siderosis``): a detection
   within ``diameter / 2 + max_distance_mm`` of one's centre is that mimic reported as a
   microbleed (many to one; ``extended_mimics`` counts, per type, the mimics with at least one).

Every detection not matched in round 1 is a false positive (FP), including those matched to a
calcification in round 2 or a mimic in round 3 (they are counted in ``fp`` and, in addition, in
``calcifications_reported``).

Scores and undefined values
---------------------------
- ``sensitivity = TP / (TP + FN)``; undefined (NaN, ``null`` in JSON, ``n/a`` in TSV) when the
  scan has no true CMB (a healthy control), never 1.0 or 0.0.
- ``precision = TP / (TP + FP)``; undefined when there is no detection.
- ``f1 = 2 TP / (2 TP + FP + FN)`` (the Dice form); undefined only when there is neither a true
  CMB nor a detection.  A control with false positives has F1 = 0.
- ``fp_per_scan``: FP of the scan; pooled, total FP divided by the number of scans (controls
  included).
- Pooled sensitivity, precision and F1 are computed from the *sums* of TP, FP and FN over all
  scans; the mean of the per-scan values (over scans where the value is defined) is given as
  well under ``mean_of_scans``.
- ``calcification_fraction``: calcifications reported as CMB / calcifications in truth;
  undefined when there is none.
- Centroid error (mean, median; mm) and diameter error (detected ``diameter_mm`` minus true
  ``diameter_mm``; mean signed and mean absolute, mm) are over TP pairs only; undefined with
  no TP.  Microbleeds bloom on T2*-weighted images, so a positive signed diameter error (the
  detection larger than the true susceptibility source) is expected.
- Sensitivity by true diameter: bins ``[lo, hi)`` from the edges given (default
  ``(1.0, 1.5, 2.5, 5.0)`` mm, i.e. ``<1.0``, ``1.0-1.5``, ``1.5-2.5``, ``2.5-5.0``, ``>=5.0``).
- Sensitivity by region: the truth ``region`` column (``lobar``, ``deep``, ``infratentorial``
  always reported, other values observed too).
- Count agreement across scans (detected vs true CMB count per scan): mean and SD of the
  difference (detected - true) with Bland-Altman 95 % limits of agreement, Pearson r and
  Spearman rho (:mod:`scipy.stats`; need >= 3 scans and non-constant counts, else NaN), and
  **Lin's concordance correlation coefficient** (CCC; Lin 1989, population moments), chosen over
  ICC(2,1) because it directly measures agreement with the identity line between the two
  counts without an ANOVA model; it is NaN with fewer than 2 scans or when both counts are
  constant.
- Burden category (``0``, ``1``, ``2-4``, ``>=5`` CMBs, as in ``summary.json``): per scan the
  true and detected category; pooled, the confusion matrix (rows true, columns detected), the
  fraction of scans in agreement, Cohen's kappa and linearly weighted kappa.

Files written by :func:`write_evaluation`
-----------------------------------------
``evaluation.json`` (every metric), ``evaluation_scans.tsv`` (one row per scan, then a row with
``scan = pooled``), ``evaluation_matches.tsv`` (one row per truth row and per detection:
``scan, truth_id, truth_type, lesion_id, distance_mm, match_type, ...``) and
``evaluation.txt`` (the plain-text table of :func:`format_table`).  TSV missing values are
``n/a`` (BIDS convention); JSON uses ``null``.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..contract import BURDEN_CATEGORIES, LESIONS_FILE, burden_category
from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.derivatives import BIDS_NAMES
from ..io.tables import NA, json_text, jsonable, tsv_text
from .truth_table import EXTENDED_MIMICS, TRUTH_REGIONS, TRUTH_SUFFIX, TRUTH_TYPES

__all__ = [
    "DEFAULT_MAX_DISTANCE_MM",
    "DEFAULT_DIAMETER_EDGES_MM",
    "MatchPair",
    "Matching",
    "EvaluationResult",
    "read_truth",
    "read_detections",
    "match",
    "diameter_bin_labels",
    "score_scan",
    "evaluate_pairs",
    "pair_folders",
    "evaluate_folders",
    "write_evaluation",
    "format_table",
]

DEFAULT_MAX_DISTANCE_MM = 3.0
DEFAULT_DIAMETER_EDGES_MM = (1.0, 1.5, 2.5, 5.0)

JSON_FILE = "evaluation.json"
SCANS_FILE = "evaluation_scans.tsv"
MATCHES_FILE = "evaluation_matches.tsv"
TEXT_FILE = "evaluation.txt"

_TRUTH_REQUIRED = ("truth_id", "type", "x_mm", "y_mm", "z_mm", "diameter_mm", "region")
_DET_REQUIRED = ("lesion_id", "x_mm", "y_mm", "z_mm", "diameter_mm")
_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def _read_tsv(path, required):
    """Read a tab-separated file into a header and a list of dicts; check required columns."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t")
            rows = [r for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable tab-separated text file ({exc})") from None
    # drop fully blank lines (e.g. a trailing newline)
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(path, "empty file, expected a header line")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise InputError(path, "header has fewer than 2 columns; is the file tab-separated?")
    if len(set(header)) != len(header):
        raise InputError(path, "duplicate column names in header")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    out = []
    for lineno, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise InputError(
                path, f"line {lineno} has {len(r)} fields, the header has {len(header)}")
        out.append({h: c.strip() for h, c in zip(header, r)})
    return header, out


def _to_int(path, lineno, col, text):
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = _NAN
        if math.isfinite(f) and f == int(f):
            return int(f)
        raise InputError(path, f"line {lineno}: column {col} is not an integer: {text!r}") from None


def _to_float(path, lineno, col, text, finite=True):
    if text.lower() in ("", "n/a", "na", "nan") and not finite:
        return _NAN
    try:
        v = float(text)
    except ValueError:
        raise InputError(path, f"line {lineno}: column {col} is not a number: {text!r}") from None
    if finite and not math.isfinite(v):
        raise InputError(path, f"line {lineno}: column {col} is not finite: {text!r}")
    return v


def _unique_id(path, lineno, column, text, seen):
    """Integer id of one row, refused when it repeats an earlier row's (``seen`` is updated)."""
    value = _to_int(path, lineno, column, text)
    if value in seen:
        raise InputError(path, f"line {lineno}: duplicate {column} {value}")
    seen.add(value)
    return value


def read_truth(path):
    """Read a phantom ground-truth table ``<name>_truth.tsv``.

    Parameters
    ----------
    path : str or path-like
        Tab-separated file with at least the columns ``truth_id, type, x_mm, y_mm, z_mm,
        diameter_mm, region`` (see ``docs/contract.md``).  A file with a header and no rows
        is valid (a healthy control).

    Returns
    -------
    list of dict
        One dict per row.  ``truth_id`` is an int; ``type`` is ``"cmb"`` or
        ``"calcification"`` (lower-cased); ``x_mm, y_mm, z_mm`` (world RAS+ centroid, mm) and
        ``diameter_mm`` (true diameter, mm) are floats; ``region`` is lower-cased; other
        columns are kept as strings.

    Raises
    ------
    InputError
        Missing file, malformed TSV, missing column, non-numeric or non-finite coordinate,
        unknown type, or duplicate ``truth_id``.
    """
    path = Path(path)
    _, rows = _read_tsv(path, _TRUTH_REQUIRED)
    seen = set()
    out = []
    for lineno, r in enumerate(rows, start=2):
        row = dict(r)
        row["truth_id"] = _unique_id(path, lineno, "truth_id", r["truth_id"], seen)
        t = r["type"].lower()
        if t not in TRUTH_TYPES:
            raise InputError(path, f"line {lineno}: type must be one of {', '.join(TRUTH_TYPES)}, "
                                   f"not {r['type']!r}")
        row["type"] = t
        for c in ("x_mm", "y_mm", "z_mm", "diameter_mm"):
            row[c] = _to_float(path, lineno, c, r[c])
        row["region"] = r["region"].lower() or "unknown"
        out.append(row)
    return out


def read_detections(path_or_folder, include_possible=True):
    """Read the accepted lesions of one scan.

    Parameters
    ----------
    path_or_folder : str or path-like
        A ``lesions.tsv`` file, or a detector output folder that contains one.
    include_possible : bool, optional
        If False, keep only lesions whose ``certainty`` column is ``definite`` (requires the
        column).  Default True: every accepted lesion counts as a detection.

    Returns
    -------
    list of dict
        One dict per lesion: ``lesion_id`` (int), ``x_mm, y_mm, z_mm`` (world RAS+ centroid,
        mm), ``diameter_mm`` (equivalent-sphere diameter, mm; NaN if empty or ``n/a``), other
        columns as strings (``confidence`` as float when present and numeric).

    Raises
    ------
    InputError
        Missing folder or file, malformed TSV, missing column, non-numeric coordinate, or
        duplicate ``lesion_id``.
    """
    p = Path(path_or_folder)
    if p.is_dir():
        p = p / LESIONS_FILE
        if not p.exists():
            raise InputError(p, f"no {LESIONS_FILE} in the detector output folder")
    required = _DET_REQUIRED + (() if include_possible else ("certainty",))
    _, rows = _read_tsv(p, required)
    seen = set()
    out = []
    for lineno, r in enumerate(rows, start=2):
        row = dict(r)
        row["lesion_id"] = _unique_id(p, lineno, "lesion_id", r["lesion_id"], seen)
        for c in ("x_mm", "y_mm", "z_mm"):
            row[c] = _to_float(p, lineno, c, r[c])
        row["diameter_mm"] = _to_float(p, lineno, "diameter_mm", r["diameter_mm"], finite=False)
        if "confidence" in r:
            row["confidence"] = _to_float(p, lineno, "confidence", r["confidence"], finite=False)
        if not include_possible and r["certainty"].lower() != "definite":
            continue
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchPair:
    """One matched (truth, detection) pair.

    Attributes
    ----------
    truth_id, lesion_id : int
    distance_mm : float
        Euclidean distance between the world centroids, mm.
    truth_type : str
        ``"cmb"`` or ``"calcification"``.
    """

    truth_id: int
    lesion_id: int
    distance_mm: float
    truth_type: str


@dataclass
class Matching:
    """Result of :func:`match` for one scan.

    Attributes
    ----------
    max_distance_mm : float
        Largest allowed centroid distance, mm.
    cmb_pairs : list of MatchPair
        True positives.
    calcification_pairs : list of MatchPair
        Detections matched (in the second round) to a calcification: calcifications reported
        as CMB.  These detections are also false positives.
    missed_truth_ids : list of int
        CMB truths without a detection (false negatives).
    unreported_calcification_ids : list of int
        Calcifications without a detection (correctly not reported).
    unmatched_lesion_ids : list of int
        Detections matched to nothing.
    """

    max_distance_mm: float
    cmb_pairs: list = field(default_factory=list)
    calcification_pairs: list = field(default_factory=list)
    missed_truth_ids: list = field(default_factory=list)
    unreported_calcification_ids: list = field(default_factory=list)
    unmatched_lesion_ids: list = field(default_factory=list)
    extended_pairs: list = field(default_factory=list)
    unreported_extended_ids: list = field(default_factory=list)

    @property
    def tp(self):
        """Number of true positives."""
        return len(self.cmb_pairs)

    @property
    def fn(self):
        """Number of false negatives (missed CMBs)."""
        return len(self.missed_truth_ids)

    @property
    def fp(self):
        """Number of false positives (detections not matched to a CMB, calcifications included)."""
        return len(self.unmatched_lesion_ids) + len(self.calcification_pairs) + len(self.extended_pairs)

    @property
    def false_positive_ids(self):
        """Lesion ids of all false positives, sorted."""
        return sorted(self.unmatched_lesion_ids + [p.lesion_id for p in self.calcification_pairs]
                      + [p.lesion_id for p in self.extended_pairs])


def _assign(a_xyz, b_xyz, limit):
    """Hungarian assignment with forbidden pairs (distance > limit).

    Returns a list of ``(row index in a, row index in b, distance_mm)`` for allowed pairs.
    Forbidden pairs get a cost larger than the sum of any set of allowed pairs, so the optimum
    first maximises the number of allowed pairs, then minimises their summed distance.
    """
    if len(a_xyz) == 0 or len(b_xyz) == 0:
        return []
    a = np.asarray(a_xyz, float).reshape(-1, 3)
    b = np.asarray(b_xyz, float).reshape(-1, 3)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    allowed = d <= limit
    if not allowed.any():
        return []
    big = (min(len(a), len(b)) + 1) * (limit + 1.0) * 2.0
    cost = np.where(allowed, d, big)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c), float(d[r, c])) for r, c in zip(rows, cols) if allowed[r, c]]


def _xyz(rows):
    return [(float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])) for r in rows]


def match(truth_rows, detected_rows, max_distance_mm=DEFAULT_MAX_DISTANCE_MM):
    """Match detections to truth one-to-one (CMBs first, then calcifications).

    Parameters
    ----------
    truth_rows : list of dict
        Rows as from :func:`read_truth` (needs ``truth_id, x_mm, y_mm, z_mm``; ``type``
        defaults to ``"cmb"`` when absent).
    detected_rows : list of dict
        Rows as from :func:`read_detections` (needs ``lesion_id, x_mm, y_mm, z_mm``).
    max_distance_mm : float, optional
        Largest centroid distance for a pair, mm (inclusive).  Default 3.0.

    Returns
    -------
    Matching
    """
    limit = float(max_distance_mm)
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"max_distance_mm must be a positive finite number, not {max_distance_mm}")
    cmbs = [t for t in truth_rows if t.get("type", "cmb") == "cmb"]
    calcs = [t for t in truth_rows if t.get("type", "cmb") == "calcification"]
    m = Matching(max_distance_mm=limit)

    used_det = set()
    for ti, di, dist in _assign(_xyz(cmbs), _xyz(detected_rows), limit):
        m.cmb_pairs.append(MatchPair(cmbs[ti]["truth_id"], detected_rows[di]["lesion_id"],
                                     dist, "cmb"))
        used_det.add(di)
    matched_t = {p.truth_id for p in m.cmb_pairs}
    m.missed_truth_ids = [t["truth_id"] for t in cmbs if t["truth_id"] not in matched_t]

    rest = [i for i in range(len(detected_rows)) if i not in used_det]
    rest_rows = [detected_rows[i] for i in rest]
    for ti, ri, dist in _assign(_xyz(calcs), _xyz(rest_rows), limit):
        m.calcification_pairs.append(MatchPair(calcs[ti]["truth_id"], rest_rows[ri]["lesion_id"],
                                               dist, "calcification"))
        used_det.add(rest[ri])
    matched_c = {p.truth_id for p in m.calcification_pairs}
    m.unreported_calcification_ids = [t["truth_id"] for t in calcs
                                      if t["truth_id"] not in matched_c]
    _match_extended(m, truth_rows, detected_rows, used_det, limit)
    m.unmatched_lesion_ids = [detected_rows[i]["lesion_id"] for i in range(len(detected_rows))
                              if i not in used_det]
    m.cmb_pairs.sort(key=lambda p: p.truth_id)
    m.calcification_pairs.sort(key=lambda p: p.truth_id)
    return m


def _match_extended(m, truth_rows, detected_rows, used_det, limit):
    """Third round: every detection left within ``diameter / 2 + limit`` of an extended mimic's
    centre (cavernoma, siderosis; the nearest one) is that mimic reported as a microbleed
    (many detections to one mimic)."""
    ext = [t for t in truth_rows if t.get("type", "cmb") in EXTENDED_MIMICS]
    hit = set()
    for di, d in enumerate(detected_rows):
        if di in used_det or not ext:
            continue
        p = np.array(_xyz([d])[0])
        gaps = [np.linalg.norm(p - np.array(_xyz([t])[0])) - float(t["diameter_mm"]) / 2.0 for t in ext]
        k = int(np.argmin(gaps))
        if gaps[k] <= limit:
            t = ext[k]
            m.extended_pairs.append(MatchPair(t["truth_id"], d["lesion_id"],
                                              float(gaps[k] + float(t["diameter_mm"]) / 2.0), t["type"]))
            used_det.add(di)
            hit.add(t["truth_id"])
    m.unreported_extended_ids = [t["truth_id"] for t in ext if t["truth_id"] not in hit]
    m.extended_pairs.sort(key=lambda p: (p.truth_id, p.lesion_id))


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------

def _ratio(num, den):
    return num / den if den > 0 else _NAN


def _mean(values):
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(np.mean(v)) if v else _NAN


def _median(values):
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(np.median(v)) if v else _NAN


def check_edges(edges):
    """Diameter-bin edges (mm) as floats; ValueError unless positive and strictly increasing."""
    e = [float(x) for x in edges]
    if not e or any(not math.isfinite(x) or x <= 0 for x in e) or any(
            b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"diameter bin edges must be positive and strictly increasing: {edges}")
    return e


def _fmt_edge(x):
    return f"{x:g}" if x != int(x) else f"{x:.1f}"


def diameter_bin_labels(edges=DEFAULT_DIAMETER_EDGES_MM):
    """Labels of the diameter bins ``[lo, hi)`` defined by ``edges`` (mm).

    ``(1.0, 1.5, 2.5, 5.0)`` gives ``["<1.0", "1.0-1.5", "1.5-2.5", "2.5-5.0", ">=5.0"]``.
    """
    e = check_edges(edges)
    labels = [f"<{_fmt_edge(e[0])}"]
    labels += [f"{_fmt_edge(a)}-{_fmt_edge(b)}" for a, b in zip(e, e[1:])]
    labels.append(f">={_fmt_edge(e[-1])}")
    return labels


def _bin_index(d, edges):
    return int(np.searchsorted(edges, d, side="right"))


def _sens_table(keys, truth_keys, hit_flags):
    table = {k: {"n_truth": 0, "tp": 0} for k in keys}
    for k, hit in zip(truth_keys, hit_flags):
        t = table.setdefault(k, {"n_truth": 0, "tp": 0})
        t["n_truth"] += 1
        t["tp"] += int(hit)
    for t in table.values():
        t["sensitivity"] = _ratio(t["tp"], t["n_truth"])
    return table


def score_scan(truth_rows, detected_rows, max_distance_mm=DEFAULT_MAX_DISTANCE_MM,
               diameter_edges_mm=DEFAULT_DIAMETER_EDGES_MM, name=None, matching=None):
    """Score one scan.

    Parameters
    ----------
    truth_rows, detected_rows : list of dict
        As from :func:`read_truth` and :func:`read_detections`.
    max_distance_mm : float, optional
        Matching limit, mm.  Default 3.0.
    diameter_edges_mm : sequence of float, optional
        Edges of the true-diameter bins, mm.  Default ``(1.0, 1.5, 2.5, 5.0)``.
    name : str, optional
        Scan name stored in the result.
    matching : Matching, optional
        A precomputed matching of these rows (else computed here).

    Returns
    -------
    dict
        Counts (``n_truth_cmb, n_truth_calcification, n_detected, tp, fp, fn,
        calcifications_reported``), ``sensitivity, precision, f1, fp_per_scan,
        calcification_fraction``, centroid error (``centroid_error_mean_mm``,
        ``centroid_error_median_mm``), diameter error (``diameter_error_mean_signed_mm``,
        ``diameter_error_mean_abs_mm``), ``by_diameter`` and ``by_region`` (each
        ``{label: {"n_truth", "tp", "sensitivity"}}``), ``burden_true``,
        ``burden_detected``, ``burden_agree``, and ``matches`` (per-lesion rows; see
        :func:`write_evaluation`).  Undefined ratios are NaN.
    """
    edges = check_edges(diameter_edges_mm)
    labels = diameter_bin_labels(edges)
    m = matching if matching is not None else match(truth_rows, detected_rows, max_distance_mm)
    cmbs = [t for t in truth_rows if t.get("type", "cmb") == "cmb"]
    calcs = [t for t in truth_rows if t.get("type", "cmb") == "calcification"]
    truth_by_id = {t["truth_id"]: t for t in truth_rows}
    det_by_id = {d["lesion_id"]: d for d in detected_rows}
    tp, fp, fn = m.tp, m.fp, m.fn
    n_calc_rep = len(m.calcification_pairs)

    dists = [p.distance_mm for p in m.cmb_pairs]
    derr = []
    for p in m.cmb_pairs:
        dd = float(det_by_id[p.lesion_id].get("diameter_mm", _NAN))
        td = float(truth_by_id[p.truth_id]["diameter_mm"])
        if math.isfinite(dd) and math.isfinite(td):
            derr.append(dd - td)

    hit_ids = {p.truth_id for p in m.cmb_pairs}
    hits = [t["truth_id"] in hit_ids for t in cmbs]
    by_diam = _sens_table(labels, [labels[_bin_index(float(t["diameter_mm"]), edges)]
                                   for t in cmbs], hits)
    by_region = _sens_table(TRUTH_REGIONS, [str(t.get("region", "unknown")) or "unknown"
                                            for t in cmbs], hits)

    bt, bd = burden_category(len(cmbs)), burden_category(len(detected_rows))
    res = {
        "scan": name,
        "n_truth_cmb": len(cmbs),
        "n_truth_calcification": len(calcs),
        "n_detected": len(detected_rows),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "calcifications_reported": n_calc_rep,
        "sensitivity": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fp_per_scan": float(fp),
        "calcification_fraction": _ratio(n_calc_rep, len(calcs)),
        "extended_mimics": _extended_counts(m, truth_rows),
        "centroid_error_mean_mm": _mean(dists),
        "centroid_error_median_mm": _median(dists),
        "diameter_error_mean_signed_mm": _mean(derr),
        "diameter_error_mean_abs_mm": _mean([abs(x) for x in derr]),
        "by_diameter": by_diam,
        "by_region": by_region,
        "burden_true": bt,
        "burden_detected": bd,
        "burden_agree": bt == bd,
        "matches": _match_rows(name, m, truth_by_id, det_by_id),
        "_distances": dists,
        "_diameter_errors": derr,
    }
    return res


def _extended_counts(m, truth_rows):
    """Per extended-mimic type: ``{"n_truth", "reported"}`` (truths with at least one detection)
    and ``detections`` (all detections on them); only types present in the truth."""
    out = {}
    for t in truth_rows:
        kind = t.get("type", "cmb")
        if kind in EXTENDED_MIMICS:
            entry = out.setdefault(kind, {"n_truth": 0, "reported": 0, "detections": 0})
            entry["n_truth"] += 1
            n_det = sum(p.truth_id == t["truth_id"] for p in m.extended_pairs)
            entry["reported"] += int(n_det > 0)
            entry["detections"] += n_det
    return out


def _match_rows(name, m, truth_by_id, det_by_id):
    rows = []

    def row(truth_id, lesion_id, dist, mtype):
        t = truth_by_id.get(truth_id) if truth_id is not None else None
        d = det_by_id.get(lesion_id) if lesion_id is not None else None
        rows.append({
            "scan": name,
            "truth_id": truth_id,
            "truth_type": t.get("type", "cmb") if t else None,
            "lesion_id": lesion_id,
            "distance_mm": dist,
            "match_type": mtype,
            "true_diameter_mm": float(t["diameter_mm"]) if t else None,
            "detected_diameter_mm": float(d.get("diameter_mm", _NAN)) if d else None,
            "region": (t.get("region") or None) if t else None,
        })

    for p in m.cmb_pairs:
        row(p.truth_id, p.lesion_id, p.distance_mm, "tp")
    for tid in m.missed_truth_ids:
        row(tid, None, None, "fn")
    for p in m.calcification_pairs:
        row(p.truth_id, p.lesion_id, p.distance_mm, "fp_calcification")
    for tid in m.unreported_calcification_ids:
        row(tid, None, None, "calcification_not_reported")
    for p in m.extended_pairs:
        row(p.truth_id, p.lesion_id, p.distance_mm, f"fp_{p.truth_type}")
    for tid in m.unreported_extended_ids:
        row(tid, None, None, f"{truth_by_id[tid]['type']}_not_reported")
    for lid in m.unmatched_lesion_ids:
        row(None, lid, None, "fp")
    rows.sort(key=lambda r: (r["truth_id"] is None, r["truth_id"] or 0, r["lesion_id"] or 0))
    return rows


# --------------------------------------------------------------------------------------------
# pooled statistics
# --------------------------------------------------------------------------------------------

def _lin_ccc(x, y):
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 2:
        return _NAN
    mx, my = x.mean(), y.mean()
    sxy = ((x - mx) * (y - my)).mean()
    den = x.var() + y.var() + (mx - my) ** 2
    return float(2 * sxy / den) if den > 0 else _NAN


def _count_agreement(true_counts, det_counts):
    x = np.asarray(true_counts, float)
    y = np.asarray(det_counts, float)
    n = len(x)
    diff = y - x
    out = {
        "n_scans": n,
        "true_counts": [int(v) for v in x],
        "detected_counts": [int(v) for v in y],
        "mean_difference": float(diff.mean()) if n else _NAN,
        "sd_difference": float(diff.std(ddof=1)) if n > 1 else _NAN,
        "pearson_r": _NAN, "pearson_p": _NAN, "spearman_rho": _NAN, "spearman_p": _NAN,
        "lin_ccc": _lin_ccc(x, y),
    }
    sd = out["sd_difference"]
    out["loa_lower"] = out["mean_difference"] - 1.96 * sd if n > 1 else _NAN
    out["loa_upper"] = out["mean_difference"] + 1.96 * sd if n > 1 else _NAN
    if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, p = stats.pearsonr(x, y)
            rho, ps = stats.spearmanr(x, y)
        out.update(pearson_r=float(r), pearson_p=float(p),
                   spearman_rho=float(rho), spearman_p=float(ps))
    return out


def _kappa(conf, weighted):
    conf = np.asarray(conf, float)
    n = conf.sum()
    if n == 0:
        return _NAN
    k = conf.shape[0]
    idx = np.arange(k)
    w = 1 - np.abs(idx[:, None] - idx[None, :]) / (k - 1) if weighted else np.eye(k)
    p = conf / n
    po = (w * p).sum()
    pe = (w * np.outer(p.sum(1), p.sum(0))).sum()
    return float((po - pe) / (1 - pe)) if pe < 1 - 1e-12 else _NAN


def _burden_agreement(true_cats, det_cats):
    k = len(BURDEN_CATEGORIES)
    conf = [[0] * k for _ in range(k)]
    for t, d in zip(true_cats, det_cats):
        conf[BURDEN_CATEGORIES.index(t)][BURDEN_CATEGORIES.index(d)] += 1
    n = len(true_cats)
    agree = sum(conf[i][i] for i in range(k))
    return {
        "categories": list(BURDEN_CATEGORIES),
        "confusion": conf,
        "confusion_axes": "rows = true category, columns = detected category",
        "n_scans": n,
        "n_agree": agree,
        "agreement": _ratio(agree, n),
        "cohen_kappa": _kappa(conf, weighted=False),
        "weighted_kappa_linear": _kappa(conf, weighted=True),
    }


def _pool(scans, labels):
    n = len(scans)
    tp = sum(s["tp"] for s in scans)
    fp = sum(s["fp"] for s in scans)
    fn = sum(s["fn"] for s in scans)
    n_calc = sum(s["n_truth_calcification"] for s in scans)
    calc_rep = sum(s["calcifications_reported"] for s in scans)
    dists = [d for s in scans for d in s["_distances"]]
    derr = [d for s in scans for d in s["_diameter_errors"]]

    def pool_table(key, keys):
        out = {k: {"n_truth": 0, "tp": 0} for k in keys}
        for s in scans:
            for k, v in s[key].items():
                o = out.setdefault(k, {"n_truth": 0, "tp": 0})
                o["n_truth"] += v["n_truth"]
                o["tp"] += v["tp"]
        for o in out.values():
            o["sensitivity"] = _ratio(o["tp"], o["n_truth"])
        return out

    def defined(key):
        return [s[key] for s in scans if math.isfinite(s[key])]

    return {
        "scan": "pooled",
        "n_scans": n,
        "n_truth_cmb": sum(s["n_truth_cmb"] for s in scans),
        "n_truth_calcification": n_calc,
        "n_detected": sum(s["n_detected"] for s in scans),
        "tp": tp, "fp": fp, "fn": fn,
        "calcifications_reported": calc_rep,
        "sensitivity": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fp_per_scan": _ratio(fp, n),
        "calcification_fraction": _ratio(calc_rep, n_calc),
        "centroid_error_mean_mm": _mean(dists),
        "centroid_error_median_mm": _median(dists),
        "diameter_error_mean_signed_mm": _mean(derr),
        "diameter_error_mean_abs_mm": _mean([abs(x) for x in derr]),
        "by_diameter": pool_table("by_diameter", labels),
        "by_region": pool_table("by_region", TRUTH_REGIONS),
        "mean_of_scans": {
            "sensitivity": _mean(defined("sensitivity")),
            "n_scans_sensitivity": len(defined("sensitivity")),
            "precision": _mean(defined("precision")),
            "n_scans_precision": len(defined("precision")),
            "f1": _mean(defined("f1")),
            "n_scans_f1": len(defined("f1")),
        },
        "count_agreement": _count_agreement([s["n_truth_cmb"] for s in scans],
                                            [s["n_detected"] for s in scans]),
        "burden_agreement": _burden_agreement([s["burden_true"] for s in scans],
                                              [s["burden_detected"] for s in scans]),
    }


# --------------------------------------------------------------------------------------------
# evaluation of many scans
# --------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """Scores of a set of scans.

    Attributes
    ----------
    scans : list of dict
        One dict per scan as from :func:`score_scan` (plus ``truth_file`` and
        ``detections``), in input order.
    pooled : dict
        Scores over all scans (sums of TP / FP / FN), ``mean_of_scans``, ``count_agreement``
        and ``burden_agreement``.
    matches : list of dict
        Per-lesion match rows of all scans.
    settings : dict
        ``max_distance_mm``, ``diameter_edges_mm``, ``diameter_bins``, ``include_possible``.
    """

    scans: list
    pooled: dict
    matches: list
    settings: dict

    def to_dict(self):
        """JSON-ready dict (numpy values as Python ones, NaN as None)."""
        scans = [{k: v for k, v in s.items() if k not in ("matches",) and not k.startswith("_")}
                 for s in self.scans]
        return jsonable({
            "software": {"name": "microbleeds", "version": __version__},
            "settings": self.settings,
            "definitions": {
                "sensitivity": "TP / (TP + FN); null if the scan has no true CMB",
                "precision": "TP / (TP + FP); null if nothing was detected",
                "f1": "2 TP / (2 TP + FP + FN); null if no true CMB and no detection",
                "fp": "detections not matched to a true CMB (calcification matches included)",
                "pooled": "ratios from summed TP / FP / FN; mean_of_scans averages defined "
                          "per-scan values",
                "diameter_error": "detected diameter_mm - true diameter_mm over TP pairs, mm",
                "count_agreement": "detected vs true CMB count per scan; lin_ccc = Lin's "
                                   "concordance correlation coefficient",
                "matching": "Hungarian one-to-one on centroid distance (mm); pairs farther than "
                            "max_distance_mm are forbidden; CMBs matched first, then "
                            "calcifications against the remaining detections",
            },
            "pooled": self.pooled,
            "scans": scans,
            "matches": self.matches,
        })


def _scan_name(truth_path):
    n = Path(truth_path).name
    return n[: -len(TRUTH_SUFFIX)] if n.endswith(TRUTH_SUFFIX) else Path(n).stem


def evaluate_pairs(pairs, max_distance_mm=DEFAULT_MAX_DISTANCE_MM,
                   diameter_edges_mm=DEFAULT_DIAMETER_EDGES_MM, include_possible=True):
    """Evaluate several scans.

    Parameters
    ----------
    pairs : iterable of tuple
        ``(truth_tsv, detections)`` or ``(name, truth_tsv, detections)``, where ``detections``
        is a detector output folder or its ``lesions.tsv``.  Without a name, the scan is named
        after the truth file (``p01_truth.tsv`` -> ``p01``).
    max_distance_mm : float, optional
        Matching limit, mm.  Default 3.0.
    diameter_edges_mm : sequence of float, optional
        Edges of the true-diameter bins, mm.  Default ``(1.0, 1.5, 2.5, 5.0)``.
    include_possible : bool, optional
        Count ``possible`` lesions as detections (default True); False keeps ``definite`` only.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        A truth or detection file is missing or malformed.
    ValueError
        No pairs, or bad settings.
    """
    edges = check_edges(diameter_edges_mm)
    labels = diameter_bin_labels(edges)
    scans = []
    for item in pairs:
        if len(item) == 3:
            name, truth_path, det_path = item
        elif len(item) == 2:
            truth_path, det_path = item
            name = _scan_name(truth_path)
        else:
            raise ValueError(f"a pair must be (truth, detections) or (name, truth, detections): "
                             f"{item!r}")
        truth = read_truth(truth_path)
        det = read_detections(det_path, include_possible=include_possible)
        s = score_scan(truth, det, max_distance_mm, edges, name=name)
        s["truth_file"] = str(truth_path)
        s["detections"] = str(det_path)
        scans.append(s)
    if not scans:
        raise ValueError("nothing to evaluate: no (truth, detections) pairs")
    pooled = _pool(scans, labels)
    matches = [r for s in scans for r in s["matches"]]
    settings = {"max_distance_mm": float(max_distance_mm), "diameter_edges_mm": edges,
                "diameter_bins": labels, "include_possible": bool(include_possible),
                "burden_categories": list(BURDEN_CATEGORIES)}
    return EvaluationResult(scans=scans, pooled=pooled, matches=matches, settings=settings)


def pair_folders(truth_dir, results_dir, on_missing="error"):
    """Pair phantom truth tables with detector output folders.

    Every ``<name>_truth.tsv`` under ``truth_dir`` (searched recursively) is paired with a
    folder under ``results_dir`` (searched recursively) that contains ``lesions.tsv`` and is
    named ``<name>`` or ``<name>_<suffix>`` (the detector names its folder after the input
    file stem, so phantom ``p01_swi.nii.gz`` gives ``p01_swi/``; ``p01_mag/`` and ``p01/``
    match too), or with a BIDS Derivatives lesion table ``<prefix>_desc-cmb_lesions.tsv``
    whose prefix is named so (``sub-01_desc-cmb_lesions.tsv`` for ``sub-01_truth.tsv``).  A folder is only considered for the *longest* truth name it starts with
    (``p01_b_swi`` belongs to ``p01_b`` if both ``p01`` and ``p01_b`` exist).  If several
    folders match one truth, those in the same relative sub-directory as the truth file are
    preferred, then the one named exactly ``<name>``; if still more than one remains (e.g.
    both ``p01_mag/`` and ``p01_swi/``) an :class:`InputError` is raised: evaluate those with
    :func:`evaluate_pairs` instead.

    Parameters
    ----------
    truth_dir, results_dir : str or path-like
    on_missing : {"error", "skip"}, optional
        What to do with a truth file without a results folder: raise :class:`InputError`
        (default; a scan the detector failed on must not silently count as zero detections)
        or leave it out.

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        ``(truth_tsv, results)`` sorted by truth name: ``results`` is the results folder or the
        BIDS lesion table.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError("on_missing must be 'error' or 'skip'")
    truth_dir, results_dir = Path(truth_dir), Path(results_dir)
    for d in (truth_dir, results_dir):
        if not d.is_dir():
            raise InputError(d, "directory not found")
    truths = sorted(p for p in truth_dir.rglob(f"*{TRUTH_SUFFIX}") if p.is_file())
    if not truths:
        raise InputError(truth_dir, f"no *{TRUTH_SUFFIX} files found")
    by_name = {}
    for p in truths:
        n = _scan_name(p)
        if n in by_name:
            raise InputError(p, f"truth name {n!r} also used by {by_name[n]}")
        by_name[n] = p
    owner = {}
    for f, stem in _result_sets(results_dir):
        cands = [n for n in by_name if stem == n or stem.startswith(n + "_")]
        if cands:
            owner[f] = max(cands, key=len)

    pairs = []
    for n in sorted(by_name):
        tp = by_name[n]
        cands = [f for f, o in owner.items() if o == n]
        if len(cands) > 1:
            rel = tp.parent.relative_to(truth_dir)
            same = [f for f in cands if f.parent.relative_to(results_dir) == rel]
            cands = same or cands
        if len(cands) > 1:
            exact = [f for f in cands if _result_stem(f) == n]
            cands = exact or cands
        if len(cands) > 1:
            raise InputError(tp, "several results folders match: "
                                 + ", ".join(str(f) for f in sorted(cands)))
        if not cands:
            if on_missing == "error":
                raise InputError(tp, f"no results folder named {n} or {n}_* with "
                                     f"{LESIONS_FILE} under {results_dir}")
            continue
        pairs.append((tp, cands[0]))
    return pairs


_BIDS_LESIONS = "_" + BIDS_NAMES[LESIONS_FILE]


def _result_stem(path):
    """The scan name of a results folder or of a BIDS lesion table (``<prefix>_desc-cmb_lesions.tsv``)."""
    return path.name[:-len(_BIDS_LESIONS)] if path.name.endswith(_BIDS_LESIONS) else path.name


def _result_sets(results_dir):
    """Every scan's results under ``results_dir``: (folder or BIDS lesion table, scan name), sorted."""
    folders = {p.parent for p in results_dir.rglob(LESIONS_FILE) if p.is_file()}
    tables = {p for p in results_dir.rglob("*" + _BIDS_LESIONS) if p.is_file()}
    return [(p, _result_stem(p)) for p in sorted(folders | tables)]


def evaluate_folders(truth_dir, results_dir, max_distance_mm=DEFAULT_MAX_DISTANCE_MM,
                     diameter_edges_mm=DEFAULT_DIAMETER_EDGES_MM, include_possible=True,
                     on_missing="error"):
    """Pair folders with :func:`pair_folders` and evaluate them with :func:`evaluate_pairs`.

    Parameters are those of the two functions; returns an :class:`EvaluationResult`.
    """
    pairs = pair_folders(truth_dir, results_dir, on_missing=on_missing)
    if not pairs:
        raise InputError(results_dir, "no results folder matches any truth file")
    return evaluate_pairs(pairs, max_distance_mm=max_distance_mm,
                          diameter_edges_mm=diameter_edges_mm,
                          include_possible=include_possible)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def _slug(label):
    return (label.replace("<", "lt").replace(">=", "ge").replace("-", "_")
            .replace(".", "p"))


_FLOAT_FORMAT = ".6g"
"""Floats in the evaluation TSVs: 6 significant digits."""

_SCAN_COLUMNS = ["scan", "n_truth_cmb", "n_truth_calcification", "n_detected", "tp", "fp", "fn",
                 "calcifications_reported", "sensitivity", "precision", "f1", "fp_per_scan",
                 "calcification_fraction", "centroid_error_mean_mm", "centroid_error_median_mm",
                 "diameter_error_mean_signed_mm", "diameter_error_mean_abs_mm",
                 "burden_true", "burden_detected", "burden_agree"]
_MATCH_COLUMNS = ["scan", "truth_id", "truth_type", "lesion_id", "distance_mm", "match_type",
                  "true_diameter_mm", "detected_diameter_mm", "region"]


def _scan_rows(result):
    labels = result.settings["diameter_bins"]
    regions = list(result.pooled["by_region"])
    header = (_SCAN_COLUMNS
              + [f"sensitivity_diameter_{_slug(b)}" for b in labels]
              + [f"sensitivity_region_{r}" for r in regions]
              + ["truth_file", "detections"])
    rows = []
    for s in result.scans + [result.pooled]:
        r = [s.get(c) for c in _SCAN_COLUMNS]
        r += [s["by_diameter"].get(b, {}).get("sensitivity") for b in labels]
        r += [s["by_region"].get(g, {}).get("sensitivity") for g in regions]
        r += [s.get("truth_file"), s.get("detections")]
        rows.append(dict(zip(header, r)))
    return header, rows


def write_evaluation(result, out_dir):
    """Write an evaluation to ``out_dir`` (created if needed), each file atomically.

    Parameters
    ----------
    result : EvaluationResult
    out_dir : str or path-like

    Returns
    -------
    dict
        Paths written: ``{"json": .../evaluation.json, "scans": .../evaluation_scans.tsv,
        "matches": .../evaluation_matches.tsv, "text": .../evaluation.txt}``.

    Notes
    -----
    ``evaluation_scans.tsv``: one row per scan then the ``pooled`` row; columns
    ``scan, n_truth_cmb, n_truth_calcification, n_detected, tp, fp, fn,
    calcifications_reported, sensitivity, precision, f1, fp_per_scan, calcification_fraction,
    centroid_error_mean_mm, centroid_error_median_mm, diameter_error_mean_signed_mm,
    diameter_error_mean_abs_mm, burden_true, burden_detected, burden_agree``, then
    ``sensitivity_diameter_<bin>`` (``lt1p0, 1p0_1p5, ..., ge5p0``), ``sensitivity_region_<r>``,
    ``truth_file, detections``.  ``evaluation_matches.tsv``: ``scan, truth_id, truth_type,
    lesion_id, distance_mm, match_type, true_diameter_mm, detected_diameter_mm, region`` with
    ``match_type`` one of ``tp`` (CMB found), ``fn`` (CMB missed), ``fp`` (detection matched
    to nothing), ``fp_calcification`` (detection matched to a calcification),
    ``calcification_not_reported``.  Missing values are ``n/a``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_FILE, "scans": out / SCANS_FILE,
             "matches": out / MATCHES_FILE, "text": out / TEXT_FILE}
    atomic_write_text(paths["json"], json_text(result.to_dict()))
    header, rows = _scan_rows(result)
    atomic_write_text(paths["scans"], tsv_text(rows, header, _FLOAT_FORMAT))
    mrows = [{c: r.get(c) for c in _MATCH_COLUMNS} for r in result.matches]
    atomic_write_text(paths["matches"], tsv_text(mrows, _MATCH_COLUMNS, _FLOAT_FORMAT))
    atomic_write_text(paths["text"], format_table(result) + "\n")
    return paths


# --------------------------------------------------------------------------------------------
# plain-text table
# --------------------------------------------------------------------------------------------

def _f(v, nd=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return NA
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{nd}f}"


def _grid(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(h).rjust(w) if i else str(h).ljust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return lines


def format_table(result):
    """Readable plain-text summary of an evaluation for the terminal.

    Parameters
    ----------
    result : EvaluationResult

    Returns
    -------
    str
        A per-scan table with a pooled row, then pooled sensitivity by diameter and region,
        calcifications, errors (mm), count and burden agreement.  ``n/a`` marks undefined
        values.
    """
    P = result.pooled
    st = result.settings
    out = [f"Evaluation of {P['n_scans']} scan(s); match limit {st['max_distance_mm']:g} mm; "
           f"{'definite and possible' if st['include_possible'] else 'definite'} lesions"]
    header = ["scan", "true", "det", "TP", "FP", "FN", "calc", "sens", "prec", "F1",
              "cent_mm", "diam_err_mm", "burden T/D"]
    rows = []
    for s in result.scans + [P]:
        rows.append([s["scan"], s["n_truth_cmb"], s["n_detected"], s["tp"], s["fp"], s["fn"],
                     s["calcifications_reported"], _f(s["sensitivity"]), _f(s["precision"]),
                     _f(s["f1"]), _f(s["centroid_error_mean_mm"]),
                     _f(s["diameter_error_mean_signed_mm"]),
                     "" if s is P else f"{s['burden_true']}/{s['burden_detected']}"])
    out += _grid(header, rows)
    ms = P["mean_of_scans"]
    out.append(f"pooled FP per scan {_f(P['fp_per_scan'])}; mean of per-scan values: "
               f"sens {_f(ms['sensitivity'])} (n={ms['n_scans_sensitivity']}), "
               f"prec {_f(ms['precision'])} (n={ms['n_scans_precision']}), "
               f"F1 {_f(ms['f1'])} (n={ms['n_scans_f1']})")
    out.append("")
    out.append("Sensitivity by true diameter (mm):")
    out += _grid(["bin", "true", "TP", "sens"],
                 [[k, v["n_truth"], v["tp"], _f(v["sensitivity"])]
                  for k, v in P["by_diameter"].items()])
    out.append("")
    out.append("Sensitivity by region:")
    out += _grid(["region", "true", "TP", "sens"],
                 [[k, v["n_truth"], v["tp"], _f(v["sensitivity"])]
                  for k, v in P["by_region"].items()])
    out.append("")
    out.append(f"Calcifications reported as CMB: {P['calcifications_reported']} of "
               f"{P['n_truth_calcification']} ({_f(P['calcification_fraction'])})")
    out.append(f"Centroid error (TP): mean {_f(P['centroid_error_mean_mm'])} mm, "
               f"median {_f(P['centroid_error_median_mm'])} mm")
    out.append(f"Diameter error detected - true (TP): mean signed "
               f"{_f(P['diameter_error_mean_signed_mm'])} mm, mean absolute "
               f"{_f(P['diameter_error_mean_abs_mm'])} mm (blooming makes > 0 expected)")
    ca = P["count_agreement"]
    out.append(f"Count agreement (detected - true): mean {_f(ca['mean_difference'])}, "
               f"SD {_f(ca['sd_difference'])}, 95% LoA [{_f(ca['loa_lower'])}, "
               f"{_f(ca['loa_upper'])}]; Lin CCC {_f(ca['lin_ccc'], 3)}; "
               f"Pearson r {_f(ca['pearson_r'], 3)}; Spearman rho {_f(ca['spearman_rho'], 3)}")
    ba = P["burden_agreement"]
    out.append(f"Burden category agreement: {ba['n_agree']}/{ba['n_scans']} "
               f"({_f(ba['agreement'])}); Cohen kappa {_f(ba['cohen_kappa'], 3)}; "
               f"linear weighted kappa {_f(ba['weighted_kappa_linear'], 3)}")
    cats = ba["categories"]
    out += _grid(["true \\ detected"] + cats,
                 [[c] + ba["confusion"][i] for i, c in enumerate(cats)])
    return "\n".join(out)
