"""Scoring of extended mimics (cavernomas, siderosis): many detections to one mimic, all FPs."""

from microbleeds.bench import evaluate


def _t(tid, kind, x, d):
    return {"truth_id": tid, "type": kind, "x_mm": x, "y_mm": 0.0, "z_mm": 0.0, "diameter_mm": d, "region": "lobar"}


def _d(lid, x):
    return {"lesion_id": lid, "x_mm": x, "y_mm": 0.0, "z_mm": 0.0, "diameter_mm": 3.0}


def test_detections_on_a_cavernoma_rim_are_that_cavernoma_reported():
    truth = [_t(1, "cmb", 0.0, 2.0), _t(2, "cavernoma", 40.0, 12.0), _t(3, "siderosis", 100.0, 30.0)]
    det = [_d(1, 0.5), _d(2, 34.5), _d(3, 46.0), _d(4, 70.0), _d(5, 60.0)]
    m = evaluate.match(truth, det)
    assert m.tp == 1 and m.fn == 0
    assert sorted(p.lesion_id for p in m.extended_pairs) == [2, 3]
    assert m.unmatched_lesion_ids == [4, 5] and m.fp == 4
    assert m.unreported_extended_ids == [3]
    res = evaluate.score_scan(truth, det, name="s")
    assert res["extended_mimics"] == {"cavernoma": {"n_truth": 1, "reported": 1, "detections": 2},
                                      "siderosis": {"n_truth": 1, "reported": 0, "detections": 0}}
    kinds = {r["match_type"] for r in res["matches"]}
    assert {"fp_cavernoma", "siderosis_not_reported", "tp", "fp"} <= kinds


def test_a_cmb_beside_a_cavernoma_is_still_a_true_positive():
    truth = [_t(1, "cmb", 0.0, 2.0), _t(2, "cavernoma", 9.0, 10.0)]
    m = evaluate.match(truth, [_d(1, 1.0)])
    assert m.tp == 1 and not m.extended_pairs
