"""The vendor's phase convention (BIDS Manufacturer) as a prior for the estimate."""

import pytest

from microbleeds.stages.dipole_sign import TRUSTED_SIGN, vendor_sign, with_vendor_prior


@pytest.mark.parametrize("name, sign", [("Siemens", -1), ("SIEMENS Healthineers", -1), ("GE", 1),
                                        ("GE MEDICAL SYSTEMS", 1), ("Philips", None), ("", None), (None, None)])
def test_vendor_table(name, sign):
    assert vendor_sign(name) == sign


def test_no_evidence_takes_the_vendor_and_lets_the_calcification_rule_act():
    sign, ev = with_vendor_prior(1, {"confidence": "none", "method": "default", "note": ""}, "Siemens")
    assert sign == -1 and ev["confidence"] in TRUSTED_SIGN and "vendor" in ev["method"]


def test_weak_agreeing_estimate_is_raised_and_a_confident_disagreement_is_kept_but_noted():
    sign, ev = with_vendor_prior(1, {"confidence": "low", "method": "vein orientation"}, "GE")
    assert (sign, ev["confidence"]) == (1, "moderate")
    sign, ev = with_vendor_prior(1, {"confidence": "high", "method": "vein orientation", "note": ""}, "Siemens")
    assert (sign, ev["confidence"]) == (1, "high") and "disagrees" in ev["note"]


def test_a_moderate_disagreement_is_not_trusted():
    sign, ev = with_vendor_prior(1, {"confidence": "moderate", "method": "dipole of compact foci"}, "Siemens")
    assert ev["confidence"] not in TRUSTED_SIGN and sign == -1


def test_unknown_vendor_changes_nothing():
    ev0 = {"confidence": "low", "method": "vein orientation"}
    assert with_vendor_prior(1, ev0, "Canon") == (1, ev0)
