"""The BIDS App's group level on a small synthetic BIDS dataset: outputs, models, exclusions, the
group page in headless Chromium."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "review"))
from cohort_data import write_dataset, write_scan  # noqa: E402
from conftest_browser import chromium_available, launch_chromium  # noqa: E402

from microbleeds.errors import InputError  # noqa: E402
from microbleeds.group import add_group_arguments, load_cohort, run_group_level  # noqa: E402
from microbleeds.io.derivatives import result_path  # noqa: E402
from microbleeds.io.tables import read_tsv  # noqa: E402

STUDY = ["--model", "cmb_total ~ nadir_platelets + duration_months + age + sex", "--two-step", "0.05",
         "--adjust-for", "age", "sex", "--exclude", "sub-07:>50 CMBs after total body irradiation",
         "--bins", "nadir_platelets:5,10,15", "--presence"]
BROWSER_TIMEOUT_MS = 120_000


def parse(argv):
    parser = argparse.ArgumentParser()
    add_group_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bids, results, cov = write_dataset(tmp_path_factory.mktemp("group"), n=30, seed=1)
    paths = run_group_level(bids, results, parse(STUDY + ["--outcome", "cmb_total", "--outcome", "cmb_lobar"]))
    return bids, results, cov, paths


def test_outputs_written(run):
    _bids, results, _cov, paths = run
    assert set(paths) == {"table", "table_sidecar", "models", "models_sidecar", "prevalence", "prevalence_sidecar",
                          "analysis", "report"}
    assert all(p.parent == results and p.is_file() for p in paths.values())


def test_table_keeps_the_exclusion_with_its_reason(run):
    _bids, _results, cov, paths = run
    _cols, rows = read_tsv(paths["table"])
    assert len(rows) == 30
    sub07 = next(r for r in rows if r["participant_id"] == "sub-07")
    assert sub07["excluded"] == "true" and sub07["exclusion_reason"] == ">50 CMBs after total body irradiation"
    assert sum(r["excluded"] == "true" for r in rows) == 1
    analysis = json.loads(paths["analysis"].read_text())
    assert analysis["excluded"] == [{"participant_id": "sub-07", "session_id": None,
                                     "scan": "sub-07/anat/sub-07", "reason": ">50 CMBs after total body irradiation"}]


def test_models_equal_statsmodels_on_the_complete_cases(run):
    _bids, results, _cov, paths = run
    analysis = json.loads(paths["analysis"].read_text())
    main = analysis["analyses"][0]
    assert main["outcome"] == "cmb_total"
    cc = main["complete_cases"]
    assert cc["n_used"] == 28 and cc["n_dropped"] == 1  # sub-07 excluded, sub-05 has no nadir platelets
    assert cc["dropped"][0]["participant_id"] == "sub-05" and cc["dropped"][0]["missing"] == ["nadir_platelets"]
    table = load_cohort(results)
    data = table[(table["participant_id"] != "sub-07") & table["nadir_platelets"].notna()]
    direct = smf.glm(STUDY[1], data, family=sm.families.Poisson()).fit()
    assert main["family_choice"]["choice"] == "poisson"  # the simulated counts are Poisson
    _cols, rows = read_tsv(paths["models"])
    got = {r["term"]: r for r in rows if r["outcome"] == "cmb_total" and r["model"] == "main"}
    for term in direct.params.index:
        # the TSV keeps 6 significant digits
        assert float(got[term]["ratio"]) == pytest.approx(np.exp(direct.params[term]), rel=1e-5)
        assert float(got[term]["p"]) == pytest.approx(direct.pvalues[term], rel=1e-5)
    assert main["main"]["coefficients"][2]["ratio"] == pytest.approx(np.exp(direct.params.iloc[2]), rel=1e-12)
    ts = main["two_step"]
    assert "nadir_platelets" in ts["selected"] and ts["multivariate"]["formula"].endswith("+ age + sex")
    assert main["presence"]["ratio"] == "OR" and main["presence"]["formula"].startswith("cmb_total_present ~")
    kinds = {r["model"] for r in rows}
    assert kinds == {"main", "univariate", "multivariate", "presence"}
    assert {r["outcome"] for r in rows} == {"cmb_total", "cmb_lobar"}


def test_prevalence_table(run):
    _bids, _results, _cov, paths = run
    _cols, rows = read_tsv(paths["prevalence"])
    total = [r for r in rows if r["outcome"] == "cmb_total"]
    assert [r["bin"] for r in total] == ["<5", "5 to <10", "10 to <15", ">=15"]
    assert sum(int(r["n"]) for r in total) == 28
    for r in total:
        assert float(r["ci_low"]) <= float(r["proportion"]) <= float(r["ci_high"])


def test_rerun_reproduces_the_tables(run):
    bids, results, _cov, paths = run
    before = {k: paths[k].read_bytes() for k in ("table", "models", "prevalence", "analysis", "table_sidecar",
                                                   "report")}
    again = run_group_level(bids, results, parse(STUDY + ["--outcome", "cmb_total", "--outcome", "cmb_lobar"]))
    assert {k: again[k].read_bytes() for k in before} == before


def test_usage_errors(tmp_path):
    bids, results, _cov = write_dataset(tmp_path, n=6, seed=2, report=False)
    with pytest.raises(InputError, match="--exclude: sub-99 is not a participant"):
        run_group_level(bids, results, parse(STUDY[:2] + ["--exclude", "sub-99:why"]))
    with pytest.raises(InputError, match="platelets not a column"):
        run_group_level(bids, results, parse(["--model", "cmb_total ~ platelets"]))
    with pytest.raises(SystemExit):
        parse(["--exclude", "sub-01"])  # no reason
    with pytest.raises(SystemExit):
        parse(["--two-step", "5"])
    write_scan(results, "sub-01", 2, session="ses-2", seed=77)
    with pytest.raises(InputError, match="sub-01 has 2 scans"):
        run_group_level(bids, results, parse(["--model", "cmb_total ~ age"]))
    paths = run_group_level(bids, results, parse(["--model", "cmb_total ~ age", "--exclude", "sub-01_ses-2:repeat"]))
    assert json.loads(paths["analysis"].read_text())["excluded"][0]["session_id"] == "ses-2"


def test_no_model_gives_table_and_figures(tmp_path):
    bids, results, _cov = write_dataset(tmp_path, n=5, seed=4)
    prefix = results / "sub-02" / "anat" / "sub-02"  # a completely reviewed scan: one lesion confirmed
    reviewed = json.loads(result_path(prefix, "summary.json").read_text())
    reviewed.update(counts={"total": 1, "definite": 1, "possible": 0}, burden_category="1",
                    review={"complete": True, "reviewers": ["nr"]})
    result_path(prefix, "summary_reviewed.json").write_text(json.dumps(reviewed))
    paths = run_group_level(bids, results, parse([]))
    assert "models" not in paths and "prevalence" not in paths
    page = paths["report"].read_text()
    assert "No model asked for" in page and page.count("data:image/png;base64,") == 2
    assert "<td>complete</td>" in page and "<th>cmb_total_reviewed</th>" in page
    table = load_cohort(results)
    row = table[table["participant_id"] == "sub-02"].iloc[0]
    assert (row["review_state"], row["cmb_total_reviewed"], row["burden_itp_reviewed"]) == ("complete", 1, "1")


def test_page_content(run):
    _bids, _results, _cov, paths = run
    page = paths["report"].read_text()
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)""", page)
    assert all(r.startswith("data:image/png;base64,") or r.endswith("_desc-cmb_report.html") for r in refs)
    assert sum(r.endswith("_desc-cmb_report.html") for r in refs) == 30
    assert "&gt;50 CMBs after total body irradiation" in page and "sub-05 (missing nadir_platelets)" in page
    # per outcome 4 scatter plots + 1 prevalence figure; burden and regions once
    assert page.count("data:image/png;base64,") == 2 * 4 + 2 + 2
    assert "Content-Security-Policy" in page and "IRR" in page and "OR" in page


browser = pytest.mark.skipif(not chromium_available(), reason="/usr/bin/chromium missing (apt-get install chromium)")


def _wait_for(page, expression, seconds=60.0):
    """Poll with page.evaluate (the page's CSP forbids the eval wait_for_function would use)."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.mark.browser
@browser
def test_group_page_in_headless_chromium(run):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python package playwright not installed")
    _bids, _results, _cov, paths = run
    errors, external = [], []
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            page = b.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            def route(r):
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(paths["report"].as_uri())
            _wait_for(page, "document.readyState === 'complete'")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert len(images) == 12
            assert all(done and w > 200 and h > 150 for done, w, h in images), images
            # the sortable table works under the CSP (its script allowed by hash): sort by cmb_total
            col = page.evaluate("Array.from(document.querySelectorAll('#t th')).findIndex(t => t.textContent === "
                                "'cmb_total')")
            page.locator("#t th").nth(col).click()
            _wait_for(page, f"(() => {{ const v = Array.from(document.querySelectorAll('#t tbody tr'))"
                            f".map(r => parseFloat(r.cells[{col}].textContent));"
                            f" return v.every((x, i) => i === 0 || v[i - 1] <= x); }})()")
            # a scan's link opens its review page
            page.locator("#t tbody a").first.click()
            _wait_for(page, "document.title === 'scan report'")
        finally:
            b.close()
    assert errors == [] and external == []


def test_bids_app_labels_select_the_rows(tmp_path):
    bids, results, _cov = write_dataset(tmp_path, n=6, seed=5, report=False)
    write_scan(results, "sub-01", 3, session="ses-2", seed=78, layout="bids")
    # a table of every scan needs no model: two rows of sub-01 are fine there
    paths = run_group_level(bids, results, parse([]))
    _cols, rows = read_tsv(paths["table"])
    assert len(rows) == 7
    args = vars(parse(["--model", "cmb_total ~ age"]))
    args.update(participant_label=["01", "sub-02", "03"], session_label=None)
    with pytest.raises(InputError, match="sub-01 has 2 scans"):
        run_group_level(bids, results, args)
    args["group_session"] = "2"
    with pytest.raises(InputError, match="no scan of session ses-2"):
        run_group_level(bids, results, dict(args, participant_label=["04"]))
    paths = run_group_level(bids, results, dict(args, group_session=None, session_label=["ses-2"]))
    _cols, rows = read_tsv(paths["table"])
    assert [(r["participant_id"], r["session_id"]) for r in rows] == [("sub-01", "ses-2")]
    paths = run_group_level(bids, results, dict(args, group_session=None, participant_label=["02", "03", "04"]))
    analysis = json.loads(paths["analysis"].read_text())
    assert analysis["n_scans"] == 3 and analysis["analyses"][0]["main"]["n"] == 3
    assert any("left out of the table" in n for n in analysis["notes"])


def test_bids_app_command_line_group_level(tmp_path, capsys):
    from microbleeds.cli import main

    bids, results, _cov = write_dataset(tmp_path, n=8, seed=6, report=False)
    code = main(["bids", str(bids), str(results), "group", "--model", "cmb_total ~ nadir_platelets + age",
                 "--exclude", "sub-03:withdrew consent", "--bins", "nadir_platelets:10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "group_report.html" in printed and (results / "group_models.tsv").is_file()
    _cols, rows = read_tsv(results / "group_cmb.tsv")
    assert next(r for r in rows if r["participant_id"] == "sub-03")["exclusion_reason"] == "withdrew consent"
    assert main(["bids", str(bids), str(results), "group", "--model", "cmb_total ~ nadir"]) != 0
    assert "did you mean nadir_platelets?" in capsys.readouterr().err
