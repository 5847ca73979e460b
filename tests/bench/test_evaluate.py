"""Tests of microbleeds.bench.evaluate: matching, scores, undefined values, files."""

import csv
import json
import math

import pytest

from microbleeds.bench import evaluate as ev
from microbleeds.errors import InputError

TRUTH_HEADER = ["truth_id", "type", "x_mm", "y_mm", "z_mm", "diameter_mm", "chi_ppm", "region",
                "lobe", "hemisphere"]
LESION_HEADER = ["lesion_id", "x_mm", "y_mm", "z_mm", "i", "j", "k", "diameter_mm",
                 "max_inplane_diameter_mm", "volume_mm3", "contrast", "confidence", "certainty",
                 "region", "lobe", "hemisphere", "region_source"]


def truth(tid, x, y=0.0, z=0.0, d=2.0, type_="cmb", region="lobar"):
    return {"truth_id": tid, "type": type_, "x_mm": x, "y_mm": y, "z_mm": z, "diameter_mm": d,
            "region": region}


def det(lid, x, y=0.0, z=0.0, d=3.0, certainty="definite"):
    return {"lesion_id": lid, "x_mm": x, "y_mm": y, "z_mm": z, "diameter_mm": d,
            "certainty": certainty}


def write_truth(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(TRUTH_HEADER)
        for r in rows:
            w.writerow([r["truth_id"], r["type"], r["x_mm"], r["y_mm"], r["z_mm"],
                        r["diameter_mm"], 0.5, r["region"], "frontal", "L"])
    return path


def write_lesions(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lesions.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(LESION_HEADER)
        for r in rows:
            w.writerow([r["lesion_id"], r["x_mm"], r["y_mm"], r["z_mm"], 0, 0, 0,
                        r["diameter_mm"], r["diameter_mm"], 1.0, 0.5, 0.9, r["certainty"],
                        "lobar", "frontal", "L", "atlas"])
    return folder


TRUTHS = [truth(1, 0, 0, 0, 1.2), truth(2, 20, 0, 0, 2.0, region="deep"),
          truth(3, 0, 30, 0, 4.0, region="infratentorial")]


# ---------------------------------------------------------------- matching and scores

def test_perfect_predictions():
    dets = [det(10 + t["truth_id"], t["x_mm"], t["y_mm"], t["z_mm"], t["diameter_mm"])
            for t in TRUTHS]
    s = ev.score_scan(TRUTHS, dets)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 0, 0)
    assert s["sensitivity"] == s["precision"] == s["f1"] == 1.0
    assert s["centroid_error_mean_mm"] == 0.0
    assert s["diameter_error_mean_signed_mm"] == 0.0
    assert s["burden_true"] == s["burden_detected"] == "2-4" and s["burden_agree"]


def test_offsets_below_limit_are_matched_with_exact_error():
    offsets = [(1.0, 0, 0), (0, 2.0, 0), (1.2, 1.6, 0)]   # 1.0, 2.0, 2.0 mm
    dets = [det(i + 1, t["x_mm"] + o[0], t["y_mm"] + o[1], t["z_mm"] + o[2], t["diameter_mm"] + 1)
            for i, (t, o) in enumerate(zip(TRUTHS, offsets))]
    s = ev.score_scan(TRUTHS, dets)
    assert s["tp"] == 3 and s["fp"] == 0 and s["fn"] == 0
    assert s["centroid_error_mean_mm"] == pytest.approx(5.0 / 3)
    assert s["centroid_error_median_mm"] == pytest.approx(2.0)
    assert s["diameter_error_mean_signed_mm"] == pytest.approx(1.0)
    dists = sorted(r["distance_mm"] for r in s["matches"] if r["match_type"] == "tp")
    assert dists == pytest.approx([1.0, 2.0, 2.0])


def test_limit_is_inclusive_and_configurable():
    m = ev.match([truth(1, 0)], [det(1, 3.0)])
    assert m.tp == 1
    m = ev.match([truth(1, 0)], [det(1, 3.0)], max_distance_mm=2.5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)


def test_offsets_above_limit_give_fn_and_fp():
    dets = [det(i + 1, t["x_mm"] + 3.5, t["y_mm"], t["z_mm"]) for i, t in enumerate(TRUTHS)]
    s = ev.score_scan(TRUTHS, dets)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 3, 3)
    assert s["sensitivity"] == 0.0 and s["precision"] == 0.0 and s["f1"] == 0.0
    assert math.isnan(s["centroid_error_mean_mm"])


def test_one_extra_false_positive():
    dets = [det(t["truth_id"], t["x_mm"], t["y_mm"], t["z_mm"]) for t in TRUTHS]
    dets.append(det(99, 50, 50, 50))
    s = ev.score_scan(TRUTHS, dets)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 1, 0)
    assert s["sensitivity"] == 1.0
    assert s["precision"] == pytest.approx(0.75)
    assert s["f1"] == pytest.approx(6 / 7)
    assert s["fp_per_scan"] == 1.0
    fp_rows = [r for r in s["matches"] if r["match_type"] == "fp"]
    assert [(r["lesion_id"], r["truth_id"]) for r in fp_rows] == [(99, None)]


def test_missing_detections():
    s = ev.score_scan(TRUTHS, [det(1, 0, 0, 0)])
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 2)
    assert s["sensitivity"] == pytest.approx(1 / 3)
    assert s["precision"] == 1.0
    s = ev.score_scan(TRUTHS, [])
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 3)
    assert s["sensitivity"] == 0.0
    assert math.isnan(s["precision"])      # nothing detected: precision undefined
    assert s["f1"] == 0.0
    assert s["burden_detected"] == "0"


def test_detection_between_two_truths_goes_to_nearer():
    m = ev.match([truth(1, 0), truth(2, 4)], [det(7, 1.5)])
    assert [(p.truth_id, p.lesion_id) for p in m.cmb_pairs] == [(1, 7)]
    assert m.cmb_pairs[0].distance_mm == pytest.approx(1.5)
    assert m.missed_truth_ids == [2]


def test_hungarian_beats_greedy():
    # D1 is nearest to T1 (1.5 mm), greedy takes that pair and then D2-T2 is 6 mm (forbidden):
    # 1 match.  The optimum pairs D1-T2 (2.5 mm) and D2-T1 (2 mm): 2 matches.
    truths = [truth(1, 0), truth(2, 4)]
    dets = [det(1, 1.5), det(2, -2)]
    m = ev.match(truths, dets)
    assert m.tp == 2 and m.fp == 0 and m.fn == 0
    assert {(p.truth_id, p.lesion_id) for p in m.cmb_pairs} == {(1, 2), (2, 1)}


def test_forbidden_pairs_do_not_trade_allowed_matches_for_distance():
    # Distances far over the limit must not be used even if they make the total smaller.
    truths = [truth(1, 0), truth(2, 100)]
    dets = [det(1, 2.9)]
    m = ev.match(truths, dets)
    assert [(p.truth_id, p.lesion_id) for p in m.cmb_pairs] == [(1, 1)]


def test_calcification_reported_as_cmb():
    truths = [truth(1, 0), truth(2, 0, 2.0, type_="calcification"),
              truth(3, 20, type_="calcification"), truth(4, 40, type_="calcification")]
    # detection 1 is exactly on the CMB, detection 2 at 1 mm from calcification 2 (and 2 mm
    # from the CMB: CMBs are matched first, but one-to-one), detection 3 on calcification 3.
    dets = [det(1, 0), det(2, 0, 1.0), det(3, 20)]
    s = ev.score_scan(truths, dets)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 0)
    assert s["calcifications_reported"] == 2
    assert s["calcification_fraction"] == pytest.approx(2 / 3)
    types = sorted((r["truth_id"], r["match_type"]) for r in s["matches"])
    assert types == [(1, "tp"), (2, "fp_calcification"), (3, "fp_calcification"),
                     (4, "calcification_not_reported")]
    assert s["n_truth_cmb"] == 1 and s["burden_true"] == "1"


def test_cmb_matched_before_calcification():
    # the detection is nearer the calcification, but a CMB within the limit takes it first
    truths = [truth(1, 0), truth(2, 2.5, type_="calcification")]
    s = ev.score_scan(truths, [det(1, 2.0)])
    assert (s["tp"], s["fp"], s["calcifications_reported"]) == (1, 0, 0)


def test_zero_truth_control():
    s = ev.score_scan([], [det(1, 0), det(2, 10)])
    assert math.isnan(s["sensitivity"])
    assert s["precision"] == 0.0
    assert s["fp"] == 2 and s["fp_per_scan"] == 2.0
    assert s["burden_true"] == "0" and s["burden_detected"] == "2-4"
    s = ev.score_scan([], [])
    assert math.isnan(s["sensitivity"]) and math.isnan(s["precision"]) and math.isnan(s["f1"])
    assert s["fp"] == 0 and s["burden_agree"]


def test_sensitivity_by_diameter_and_region_hand_computed():
    truths = [truth(1, 0, d=0.8, region="lobar"),       # <1.0       found
              truth(2, 10, d=1.0, region="lobar"),      # 1.0-1.5    missed (edge goes up)
              truth(3, 20, d=1.4, region="deep"),       # 1.0-1.5    found
              truth(4, 30, d=2.0, region="deep"),       # 1.5-2.5    missed
              truth(5, 40, d=2.5, region="infratentorial"),  # 2.5-5.0 found
              truth(6, 50, d=6.0, region="lobar")]      # >=5.0      found
    dets = [det(1, 0), det(3, 20), det(5, 40), det(6, 50)]
    s = ev.score_scan(truths, dets)
    bd = s["by_diameter"]
    assert list(bd) == ["<1.0", "1.0-1.5", "1.5-2.5", "2.5-5.0", ">=5.0"]
    assert [(v["n_truth"], v["tp"]) for v in bd.values()] == [(1, 1), (2, 1), (1, 0), (1, 1),
                                                              (1, 1)]
    assert bd["1.0-1.5"]["sensitivity"] == 0.5 and bd["1.5-2.5"]["sensitivity"] == 0.0
    br = s["by_region"]
    assert br["lobar"] == {"n_truth": 3, "tp": 2, "sensitivity": pytest.approx(2 / 3)}
    assert br["deep"]["sensitivity"] == 0.5
    assert br["infratentorial"]["sensitivity"] == 1.0
    # configurable bins; an empty bin is undefined, not 0
    s = ev.score_scan(truths, dets, diameter_edges_mm=(2.0, 10.0))
    assert list(s["by_diameter"]) == ["<2.0", "2.0-10.0", ">=10.0"]
    assert s["by_diameter"]["<2.0"]["sensitivity"] == pytest.approx(2 / 3)
    assert math.isnan(s["by_diameter"][">=10.0"]["sensitivity"])


def test_bad_settings_raise_value_error():
    with pytest.raises(ValueError):
        ev.match([truth(1, 0)], [det(1, 0)], max_distance_mm=0)
    with pytest.raises(ValueError):
        ev.score_scan([], [], diameter_edges_mm=(2.0, 1.0))


# ---------------------------------------------------------------- many scans, pooling

@pytest.fixture
def study(tmp_path):
    """Three phantoms and a control, with detector folders named after input stems."""
    tdir, rdir = tmp_path / "truth", tmp_path / "results"
    tdir.mkdir()
    # p01: 2 CMBs, both found, 1 FP  -> true 2, detected 3
    write_truth(tdir / "p01_truth.tsv", [truth(1, 0), truth(2, 10, d=1.2, region="deep")])
    write_lesions(rdir / "p01_swi", [det(1, 0.5), det(2, 10), det(3, 60)])
    # p02: 4 CMBs, 2 found                 -> true 4, detected 2
    write_truth(tdir / "p02_truth.tsv", [truth(i, 10 * i) for i in range(1, 5)])
    write_lesions(rdir / "sub" / "p02_mag", [det(1, 10), det(2, 20)])
    # p03: 1 CMB + 1 calcification, both detected  -> true 1, detected 2
    write_truth(tdir / "p03_truth.tsv", [truth(1, 0), truth(2, 30, type_="calcification")])
    write_lesions(rdir / "p03", [det(1, 0), det(2, 30)])
    # c01: healthy control, 1 FP            -> true 0, detected 1
    write_truth(tdir / "c01_truth.tsv", [])
    write_lesions(rdir / "c01_swi", [det(1, 5, d=2.0, certainty="possible")])
    return tdir, rdir


def test_pair_folders(study, tmp_path):
    tdir, rdir = study
    pairs = ev.pair_folders(tdir, rdir)
    assert [(t.name, f.name) for t, f in pairs] == [
        ("c01_truth.tsv", "c01_swi"), ("p01_truth.tsv", "p01_swi"),
        ("p02_truth.tsv", "p02_mag"), ("p03_truth.tsv", "p03")]
    # missing results folder: error by default, skipped on request
    write_truth(tdir / "p04_truth.tsv", [truth(1, 0)])
    with pytest.raises(InputError, match="p04"):
        ev.pair_folders(tdir, rdir)
    assert len(ev.pair_folders(tdir, rdir, on_missing="skip")) == 4
    # ambiguous folders
    write_lesions(rdir / "p04_mag", [])
    write_lesions(rdir / "p04_swi", [])
    with pytest.raises(InputError, match="several"):
        ev.pair_folders(tdir, rdir)


def test_pair_folders_longest_prefix(tmp_path):
    tdir, rdir = tmp_path / "t", tmp_path / "r"
    tdir.mkdir()
    write_truth(tdir / "p1_truth.tsv", [])
    write_truth(tdir / "p1_b_truth.tsv", [])
    write_truth(tdir / "p10_truth.tsv", [])
    for n in ("p1_swi", "p1_b_swi", "p10_swi"):
        write_lesions(rdir / n, [])
    pairs = {t.name: f.name for t, f in ev.pair_folders(tdir, rdir)}
    assert pairs == {"p1_truth.tsv": "p1_swi", "p1_b_truth.tsv": "p1_b_swi",
                     "p10_truth.tsv": "p10_swi"}


def test_pooled_is_sum_not_mean(study):
    res = ev.evaluate_folders(*study)
    P = res.pooled
    assert [s["scan"] for s in res.scans] == ["c01", "p01", "p02", "p03"]
    assert (P["tp"], P["fp"], P["fn"]) == (5, 3, 2)
    assert P["sensitivity"] == pytest.approx(5 / 7)
    assert P["precision"] == pytest.approx(5 / 8)
    assert P["f1"] == pytest.approx(10 / 15)
    assert P["fp_per_scan"] == pytest.approx(3 / 4)
    # mean of per-scan sensitivities skips the control: (1 + 0.5 + 1) / 3
    assert P["mean_of_scans"]["sensitivity"] == pytest.approx(2.5 / 3)
    assert P["mean_of_scans"]["n_scans_sensitivity"] == 3
    assert P["calcifications_reported"] == 1 and P["calcification_fraction"] == 1.0
    assert P["centroid_error_mean_mm"] == pytest.approx(0.5 / 5)
    assert P["by_region"]["deep"] == {"n_truth": 1, "tp": 1, "sensitivity": 1.0}
    # definite only drops the control's possible lesion
    res2 = ev.evaluate_folders(*study, include_possible=False)
    assert res2.pooled["fp"] == 2 and res2.scans[0]["n_detected"] == 0


def test_count_and_burden_agreement(study):
    P = ev.evaluate_folders(*study).pooled
    ca = P["count_agreement"]
    x, y = [0, 2, 4, 1], [1, 3, 2, 2]       # true, detected per scan (c01, p01, p02, p03)
    assert ca["true_counts"] == x and ca["detected_counts"] == y
    assert ca["mean_difference"] == pytest.approx(0.25)
    mx, my = sum(x) / 4, sum(y) / 4
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / 4
    vx = sum((a - mx) ** 2 for a in x) / 4
    vy = sum((b - my) ** 2 for b in y) / 4
    assert ca["lin_ccc"] == pytest.approx(2 * sxy / (vx + vy + (mx - my) ** 2))
    assert -1 <= ca["pearson_r"] <= 1 and not math.isnan(ca["spearman_rho"])
    ba = P["burden_agreement"]
    # true 0,2-4,2-4,1 vs detected 1,2-4,2-4,2-4: 2 of 4 agree
    assert ba["n_agree"] == 2 and ba["agreement"] == 0.5
    assert ba["confusion"][0][1] == 1 and ba["confusion"][2][2] == 2 and ba["confusion"][1][2] == 1


def test_agreement_undefined_cases():
    ca = ev._count_agreement([3], [3])
    assert math.isnan(ca["lin_ccc"]) and math.isnan(ca["pearson_r"])
    assert ca["mean_difference"] == 0.0
    ca = ev._count_agreement([1, 2, 3], [1, 2, 3])
    assert ca["lin_ccc"] == pytest.approx(1.0) and ca["pearson_r"] == pytest.approx(1.0)


def test_write_evaluation_files_are_readable(study, tmp_path):
    res = ev.evaluate_folders(*study)
    out = tmp_path / "eval"
    paths = ev.write_evaluation(res, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["evaluation.json", "evaluation_scans.tsv", "evaluation_matches.tsv", "evaluation.txt"])
    data = json.loads(paths["json"].read_text())   # strict JSON: no NaN tokens
    assert "NaN" not in paths["json"].read_text()
    assert data["pooled"]["tp"] == 5
    c01 = next(s for s in data["scans"] if s["scan"] == "c01")
    assert c01["sensitivity"] is None and c01["fp"] == 1
    assert data["settings"]["max_distance_mm"] == 3.0
    with open(paths["scans"], newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["scan"] for r in rows] == ["c01", "p01", "p02", "p03", "pooled"]
    assert rows[0]["sensitivity"] == "n/a"
    assert float(rows[-1]["sensitivity"]) == pytest.approx(5 / 7)
    assert "sensitivity_diameter_lt1p0" in rows[0] and "sensitivity_region_deep" in rows[0]
    with open(paths["matches"], newline="") as fh:
        mrows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(mrows[0])[:6] == ["scan", "truth_id", "truth_type", "lesion_id", "distance_mm",
                                  "match_type"]
    kinds = [r["match_type"] for r in mrows]
    assert kinds.count("tp") == 5 and kinds.count("fn") == 2 and kinds.count("fp") == 2
    assert kinds.count("fp_calcification") == 1
    p01 = [r for r in mrows if r["scan"] == "p01" and r["match_type"] == "tp"]
    assert sorted(float(r["distance_mm"]) for r in p01) == [0.0, 0.5]
    assert "pooled" in paths["text"].read_text()
    assert not list(out.glob(".*tmp"))


def test_format_table(study):
    text = ev.format_table(ev.evaluate_folders(*study))
    lines = text.splitlines()
    assert any(line.startswith("c01") and "n/a" in line for line in lines)
    assert any(line.startswith("pooled") and "0.71" in line for line in lines)
    assert "Lin CCC" in text and "2.5-5.0" in text


def test_settings_reach_the_files(study, tmp_path):
    res = ev.evaluate_folders(*study, max_distance_mm=0.4, diameter_edges_mm=(1, 2))
    paths = ev.write_evaluation(res, tmp_path / "o")
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["diameter_bins"] == ["<1.0", "1.0-2.0", ">=2.0"]
    assert data["settings"]["max_distance_mm"] == 0.4
    assert data["pooled"]["tp"] == 4                 # the 0.5 mm offset in p01 is now too far
    header = paths["scans"].read_text().splitlines()[0].split("\t")
    assert "sensitivity_diameter_1p0_2p0" in header and "sensitivity_diameter_ge2p0" in header


# ---------------------------------------------------------------- bad input

def test_bad_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ev.read_truth(tmp_path / "nope_truth.tsv")
    with pytest.raises(InputError, match="lesions.tsv"):
        ev.read_detections(tmp_path)                    # folder without lesions.tsv
    p = tmp_path / "empty_truth.tsv"
    p.write_text("")
    with pytest.raises(InputError, match="empty"):
        ev.read_truth(p)
    p.write_text("truth_id\ttype\tx_mm\ty_mm\tz_mm\tdiameter_mm\n1\tcmb\t0\t0\t0\t1\n")
    with pytest.raises(InputError, match="missing column.*region"):
        ev.read_truth(p)
    p.write_text("\t".join(TRUTH_HEADER) + "\n1\tcmb\t0\t0\n")
    with pytest.raises(InputError, match="line 2 has 4 fields"):
        ev.read_truth(p)
    p.write_text("\t".join(TRUTH_HEADER) + "\n1\tcmb\tabc\t0\t0\t1\t0\tlobar\tf\tL\n")
    with pytest.raises(InputError, match="x_mm is not a number"):
        ev.read_truth(p)
    p.write_text("\t".join(TRUTH_HEADER) + "\n1\tvessel\t0\t0\t0\t1\t0\tlobar\tf\tL\n")
    with pytest.raises(InputError, match="type"):
        ev.read_truth(p)
    p.write_text("\t".join(TRUTH_HEADER) + "\n1\tcmb\t0\t0\t0\t1\t0\tlobar\tf\tL\n"
                 "1\tcmb\t5\t0\t0\t1\t0\tlobar\tf\tL\n")
    with pytest.raises(InputError, match="duplicate truth_id"):
        ev.read_truth(p)
    p.write_text("truth_id,type,x_mm,y_mm,z_mm,diameter_mm,region\n")
    with pytest.raises(InputError, match="tab-separated"):
        ev.read_truth(p)
    lf = tmp_path / "res" / "lesions.tsv"
    lf.parent.mkdir()
    lf.write_text("lesion_id\tx_mm\ty_mm\tz_mm\n1\t0\t0\t0\n")
    with pytest.raises(InputError, match="diameter_mm") as ei:
        ev.read_detections(lf.parent)
    assert str(ei.value).startswith(str(lf))
    lf.write_text("lesion_id\tx_mm\ty_mm\tz_mm\tdiameter_mm\n1\t0\tinf\t0\t2\n")
    with pytest.raises(InputError, match="not finite"):
        ev.read_detections(lf)


def test_read_files_round_trip(tmp_path):
    p = write_truth(tmp_path / "x_truth.tsv", TRUTHS + [truth(9, 1, type_="calcification")])
    rows = ev.read_truth(p)
    assert [r["truth_id"] for r in rows] == [1, 2, 3, 9]
    assert rows[1]["region"] == "deep" and rows[3]["type"] == "calcification"
    assert rows[2]["y_mm"] == 30.0 and rows[0]["lobe"] == "frontal"
    folder = write_lesions(tmp_path / "x_swi", [det(1, 0), det(2, 5, certainty="possible")])
    assert len(ev.read_detections(folder)) == 2
    assert len(ev.read_detections(folder / "lesions.tsv", include_possible=False)) == 1
    empty = write_lesions(tmp_path / "y", [])
    assert ev.read_detections(empty) == []
    assert ev.read_truth(write_truth(tmp_path / "c_truth.tsv", [])) == []


def test_pair_bids_derivatives(study, tmp_path):
    """A BIDS Derivatives tree pairs and scores as the plain folders holding the same tables."""
    tdir, rdir = study
    bids = tmp_path / "derivatives" / "microbleeds"
    for folder in sorted(p.parent for p in rdir.rglob("lesions.tsv")):
        name = folder.name.split("_")[0]
        anat = bids / f"sub-{name}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"{name}_acq-swi_desc-cmb_lesions.tsv").write_bytes((folder / "lesions.tsv").read_bytes())
    (bids / "sub-p01" / "anat" / "p01_acq-swi_desc-cmb_candidates.tsv").write_text("lesion_id\n")
    pairs = ev.pair_folders(tdir, bids)
    assert [(t.name, f.name) for t, f in pairs] == [
        ("c01_truth.tsv", "c01_acq-swi_desc-cmb_lesions.tsv"), ("p01_truth.tsv", "p01_acq-swi_desc-cmb_lesions.tsv"),
        ("p02_truth.tsv", "p02_acq-swi_desc-cmb_lesions.tsv"), ("p03_truth.tsv", "p03_acq-swi_desc-cmb_lesions.tsv")]
    plain, derived = ev.evaluate_folders(tdir, rdir), ev.evaluate_folders(tdir, bids)
    assert plain.pooled == derived.pooled
    # a second table for one scan is as ambiguous as a second folder
    (bids / "sub-p01" / "anat" / "p01_acq-gre_desc-cmb_lesions.tsv").write_bytes(
        (rdir / "p01_swi" / "lesions.tsv").read_bytes())
    with pytest.raises(InputError, match="several"):
        ev.pair_folders(tdir, bids)
