"""The reader's HTML report: content, orientation, speed, and a real headless-browser review."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_browser import chromium_available, launch_chromium, make_scan_output  # noqa: E402

from microbleeds.errors import InputError  # noqa: E402
from microbleeds.io.tables import read_tsv  # noqa: E402
from microbleeds.review.cohort import write_cohort  # noqa: E402
from microbleeds.review.decisions import apply_review  # noqa: E402
from microbleeds.review.images import Volume, mosaic, view_world  # noqa: E402
from microbleeds.review.markup import asset  # noqa: E402
from microbleeds.review.page import build_report, build_reports  # noqa: E402
from microbleeds.review.screenshot import screenshot  # noqa: E402

BROWSER_TIMEOUT_MS = 120_000  # a shared 2-core machine: Playwright's 30 s default is too tight


def _wait_for(page, expression, seconds=60.0):
    """Poll ``expression`` with page.evaluate (wait_for_function evaluates strings with eval, which
    the page's Content-Security-Policy rightly forbids)."""
    import time

    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    return make_scan_output(tmp_path_factory.mktemp("html"), n_candidates=6)


def _external_refs(page: str):
    """URLs the page would fetch (src / href / url()) that are not data:, blob: or in-page."""
    refs = re.findall(r"""(?<=\s)(?:src|href)=['"]?([^'"\s>]+)""", page)
    refs += re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if not r.startswith(("data:", "#", "blob:"))
            and not r.endswith(("report.html",))]


def test_report_self_contained(scan_dir):
    path = build_report(scan_dir)
    assert path == scan_dir / "report.html"
    page = path.read_text()
    assert _external_refs(page) == []
    assert "<script src" not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 1 + 6 * 3 * 3  # overview + 6 cards x 3x3
    assert "burden category" in page and "swi-3t" in page and "20 ms" in page
    assert "Lesion 3" in page and "rejected: calcification" in page and "tubular" in page
    for key in ("<kbd>c</kbd>", "<kbd>v</kbd>", "<kbd>a</kbd>", "<kbd>o</kbd>", "<kbd>r</kbd>"):
        assert key in page
    data = json.loads(re.search(r"id=mb-data>(.*?)</script>", page, re.S).group(1))
    sha = json.loads((scan_dir / "summary.json").read_text())["input"]["sha256"]
    assert data["sha256"] == sha and len(data["candidates"]) == 6
    assert f"<style>\n{asset('report.css')}</style>" in page and f"<script>\n{asset('report.js')}</script>" in page
    assert "image not found" not in page and "changed since detection" not in page


def test_changed_input_warned(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=2, with_phase=False)
    path = tmp_path / "inputs" / "sub-01_swi.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + 1, img.affine), path)
    page = build_report(d).read_text()
    assert "has changed since detection" in page and page.count("data:image/png;base64,") == 1 + 2 * 3


def test_report_without_images(tmp_path):
    """Missing input image and no phase: report still builds, says why pictures are missing."""
    d = make_scan_output(tmp_path, n_candidates=3, with_phase=False)
    (tmp_path / "inputs" / "sub-01_swi.nii.gz").unlink()
    page = build_report(d).read_text()
    assert "image not found" in page and "no pictures" in page
    assert "data:image/png" not in page


def test_relative_input_path(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=2, with_phase=False, relative_input=True)
    page = build_report(d).read_text()
    assert page.count("data:image/png;base64,") == 1 + 2 * 3


def test_bad_folder():
    with pytest.raises(InputError, match="does not exist"):
        build_report("/nonexistent/scan")
    with pytest.raises(InputError, match="does not exist"):
        build_reports("/nonexistent/root")


def _lr_volume():
    """A RAS-ambiguous test image stored in LPS-like order: bright where x > 0 (patient's right)
    and where y > 0 (anterior) only in the upper slices z > 0."""
    affine = np.array([[-1.0, 0, 0, 40], [0, -1.0, 0, 40], [0, 0, 2.0, -40], [0, 0, 0, 1]])
    shape = (81, 81, 41)
    ijk = np.indices(shape).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + shape)
    data = np.where(x > 0, 1000.0, 100.0) + np.where((y > 0) & (z > 0), 500.0, 0.0)
    return Volume("magnitude", data.astype(np.float32), affine), affine, shape


def test_crop_orientation_radiological():
    vol, _affine, _shape = _lr_volume()
    img = vol.sample(view_world((0.0, 0.0, 10.0), "axial"))
    # radiological: patient's right (bright) on the image's left; anterior (brighter) on top
    assert img[:, :20].mean() > img[:, -20:].mean() + 500
    assert img[:20, :20].mean() > img[-20:, :20].mean() + 300
    neuro = vol.sample(view_world((0.0, 0.0, 10.0), "axial", radiological=False))
    assert neuro[:, -20:].mean() > neuro[:, :20].mean() + 500
    cor = vol.sample(view_world((-5.0, 5.0, 0.0), "coronal"))
    assert cor[:, :20].mean() > cor[:, -20:].mean()            # right on the left
    sag = vol.sample(view_world((-5.0, 0.0, 0.0), "sagittal"))
    assert sag[:20, :20].mean() > sag[-20:, -20:].mean()       # superior-anterior top-left


def test_mosaic_marks_lesion_where_it_is():
    vol, affine, shape = _lr_volume()
    mask = np.ones(shape, bool)
    lesion = {"lesion_id": 1, "candidate_id": 7, "x": 20.0, "y": 20.0, "z": 10.0, "d": 3.0}
    uri, W, H, panels, markers = mosaic(vol, mask, [lesion])
    assert 4 <= len(panels) <= 12
    assert all(5 - 1e-6 <= abs(p[5] - p[4]) <= 10 + 2 + 1e-6 for p in panels)
    (lid, cid, x, y, _r), = markers
    x0, y0, w, h, z0, z1 = next(p for p in panels if p[0] <= x < p[0] + p[2]
                                and p[1] <= y < p[1] + p[3])
    assert min(z0, z1) <= 10.0 <= max(z0, z1)
    # patient's right + anterior -> left half, top half of its panel (radiological)
    assert (x - x0) < w / 2 and (y - y0) < h / 2
    assert (lid, cid) == (1, 7)


def test_fifty_candidates_fast_and_small(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=50, seed=3)
    t0 = time.perf_counter()
    path = build_report(d)
    elapsed = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"report with 50 candidates: {elapsed:.2f} s, {size / 1e6:.2f} MB")
    assert elapsed < 10.0
    assert size < 5e6
    assert path.read_text().count("class='card ") == 50


def test_build_reports_and_cohort(tmp_path):
    make_scan_output(tmp_path, n_candidates=3, name="sub-01_swi", with_phase=False)
    make_scan_output(tmp_path, n_candidates=2, name="sub-02_swi", seed=5, with_phase=False)
    paths = build_reports(tmp_path / "out")
    assert [p.parent.name for p in paths] == ["sub-01_swi", "sub-02_swi"]
    cohort = write_cohort(tmp_path / "out")
    page = cohort["html"].read_text()
    assert "sub-01_swi/report.html" in page and "sub-02_swi/report.html" in page


# --------------------------------------------------------------------------- real browser
browser = pytest.mark.skipif(not chromium_available(),
                             reason="/usr/bin/chromium missing (apt-get install chromium)")


def _playwright():
    return pytest.importorskip("playwright.sync_api",
                               reason="Python package playwright not installed")


@pytest.mark.browser
@browser
def test_review_in_browser(tmp_path):
    sync_api = _playwright()
    d = make_scan_output(tmp_path, n_candidates=5)
    report = build_report(d)
    errors, external = [], []
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            page = b.new_page(accept_downloads=True)
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            def route(r):
                if r.request.url.startswith(("file:", "data:", "blob:")):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(report.as_uri())
            # cards: lesions 1-3 (candidates 1-3), then rejected 4 and 5 (by confidence)
            order = page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.cid)")
            assert order[:3] == ["1", "2", "3"] and sorted(order[3:]) == ["4", "5"]
            page.keyboard.press("j")          # select the first card
            page.keyboard.press("c")          # 1 confirmed, advances
            page.keyboard.press("v")          # 2 vein
            page.keyboard.press("c")          # 3 confirmed
            page.keyboard.press("k")          # back to 3
            page.keyboard.press("u")          # clear 3 (stays)
            page.keyboard.press("a")          # 3 calcification, advances to order[3]
            page.keyboard.press("c")          # order[3] confirmed although rejected: added
            page.keyboard.press("o")          # order[4] other mimic
            assert "undecided" not in page.inner_text(f"#c{order[4]} [data-role=dec]")
            # saving without a reviewer name is refused with a message
            page.keyboard.press("s")
            assert "enter your name" in page.inner_text("#msg")
            page.fill("#reviewer", "Dr Test\tSmith")
            page.keyboard.press("Escape")
            with page.expect_download() as info:
                page.keyboard.press("s")
            download = info.value
            assert download.suggested_filename == "decisions.tsv"
            saved = tmp_path / "decisions.tsv"
            download.save_as(saved)
            progress = page.inner_text("#progress")
            # state survives a reload (localStorage keyed by checksum)
            page.reload()
            assert page.inner_text("#c1 [data-role=dec]") == "confirmed"
            assert page.input_value("#reviewer") == "Dr Test Smith"
            # mosaic link jumps to a card
            page.click(".ovsvg a.mk >> nth=0")
            assert page.eval_on_selector(".card.current", "e => e.dataset.cid") in ("1", "2", "3")
        finally:
            b.close()
    assert errors == [] and external == []
    assert progress.startswith("5/5 decided")

    cols, rows = read_tsv(saved)
    assert cols == ["sha256", "candidate_id", "lesion_id", "decision", "mimic_type", "reviewer",
                    "time", "x_mm", "y_mm", "z_mm"]
    got = {r["candidate_id"]: (r["decision"], r["mimic_type"]) for r in rows}
    assert got == {"1": ("confirmed", ""), "2": ("rejected", "vein"),
                   "3": ("rejected", "calcification"), order[3]: ("confirmed", ""),
                   order[4]: ("rejected", "other")}
    assert {r["reviewer"] for r in rows} == {"Dr Test Smith"}

    # a fresh browser profile loads the saved file back; another scan's file is refused
    other = tmp_path / "other.tsv"
    other.write_text(saved.read_text().replace(rows[0]["sha256"], "ab" * 32))
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            page = b.new_page()
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.goto(report.as_uri())
            assert page.inner_text("#progress").startswith("0/5 decided")
            page.set_input_files("#load", str(other))
            _wait_for(page, "document.getElementById('msg').textContent !== ''")
            assert "another scan" in page.inner_text("#msg")
            page.set_input_files("#load", str(saved))
            _wait_for(page, "document.getElementById('msg').textContent.startsWith('loaded')")
            assert page.inner_text("#progress").startswith("5/5 decided")
            assert page.inner_text(f"#c{order[4]} [data-role=dec]") == "rejected (other)"
            assert page.input_value("#reviewer") == "Dr Test Smith"
        finally:
            b.close()

    paths = apply_review(saved, d)
    _c, lesions = read_tsv(paths["lesions"])
    statuses = sorted((r["lesion_id"], r["reviewed_status"]) for r in lesions)
    assert statuses == [("1", "confirmed"), ("2", "rejected"), ("3", "rejected"), ("4", "added")]
    summary = json.loads(paths["summary"].read_text())
    assert summary["counts"]["total"] == 2 and summary["burden_category"] == "2-4"
    assert summary["review"]["reviewers"] == ["Dr Test Smith"]
    # the rebuilt report shows the review and preloads the decisions
    page_text = build_report(d).read_text()
    assert "Reviewed" in page_text and "summary_reviewed.json" in page_text


def _mb_data(page: str) -> str:
    return re.search(r"id=mb-data>(.*?)</script>", page, re.S).group(1)


HOSTILE = "a<!--<script>b"


def test_a_hostile_scan_name_is_escaped_for_each_context(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=2, name=HOSTILE, with_phase=False)
    page = build_report(d).read_text()
    data = _mb_data(page)
    assert not set("<>&") & set(data)                      # nothing in the JSON can end or derail it
    assert json.loads(data)["scan"] == HOSTILE
    assert page.count("<script") == 2 and HOSTILE not in page
    assert "<title>Microbleeds — a&lt;!--&lt;script&gt;b</title>" in page
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split(";")[1]
    assert page.index("Content-Security-Policy") < page.index("<style>") < page.index("<script")


def test_cohort_links_are_relative_file_paths(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=2, name="javascript:alert(1)", with_phase=False)
    build_report(d)
    page = write_cohort(tmp_path / "out")["html"].read_text()
    hrefs = re.findall(r"href='([^']*)'", page)
    assert hrefs == ["javascript%3Aalert%281%29/report.html"]
    assert "Content-Security-Policy" in page


@pytest.mark.browser
@browser
def test_hostile_names_in_a_browser(tmp_path):
    """The report of a scan named like a script opener still runs its script; a script injected
    into the page is blocked by the page's policy; the cohort link opens the report file."""
    sync_api = _playwright()
    d = make_scan_output(tmp_path / "a", n_candidates=3, name=HOSTILE, with_phase=False)
    report = build_report(d)
    injected = tmp_path / "injected.html"
    injected.write_text(report.read_text().replace("</body>", "<script>window.pwned = 1</script></body>"))
    j = make_scan_output(tmp_path / "b", n_candidates=2, name="javascript:alert(1)", with_phase=False)
    build_report(j)
    cohort = write_cohort(tmp_path / "b" / "out")["html"]
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            page = b.new_page()
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(report.as_uri())
            assert page.inner_text("#progress").startswith("0/3 decided")
            page.keyboard.press("j")
            page.keyboard.press("c")
            assert page.inner_text("#c1 [data-role=dec]") == "confirmed"
            assert errors == []
            page.goto(injected.as_uri())
            assert page.inner_text("#progress").startswith("1/3 decided")   # the page's own script runs
            assert page.evaluate("typeof window.pwned") == "undefined"      # the injected one does not
            assert any("Content Security Policy" in e for e in errors)
            errors.clear()
            page.goto(cohort.as_uri())
            href = page.eval_on_selector("#t a", "a => a.href")
            assert href == (j / "report.html").as_uri().replace(":alert(1)", "%3Aalert%281%29")
            page.click("#t th >> nth=0")                                    # sorting still works
            page.click("#t a")
            page.wait_for_load_state()
            assert page.url.startswith("file://") and page.url.endswith("/report.html")
            assert page.inner_text("#progress").startswith("0/2 decided")
            assert errors == []
        finally:
            b.close()


@pytest.mark.browser
@browser
def test_screenshot(scan_dir, tmp_path):
    _playwright()
    report = build_report(scan_dir)
    out = screenshot(report, tmp_path / "shot.png", width=1200, height=900)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_card_cap_lists_the_rest(scan_dir, tmp_path):
    page = build_report(scan_dir, out=tmp_path / "capped.html", max_cards=4).read_text()
    assert page.count("class='card ") == 4          # 3 lesions + the most confident rejected
    assert "2 more rejected candidates" in page
    assert not (scan_dir / "capped.html").exists()


def test_neurological_convention(scan_dir, tmp_path):
    page = build_report(scan_dir, out=tmp_path / "n.html", radiological=False).read_text()
    assert "neurological convention" in page and "<u class=l>L</u><u class=r>R</u>" in page


def test_cards_show_the_dipole_and_the_core_phase(tmp_path):
    """With phase, each card says which dipole the fit found (undecided too: the reader judges the
    pattern on the phase crops) and how much signal the dark core kept."""
    d = make_scan_output(tmp_path, n_candidates=3)
    columns, rows = read_tsv(d / "candidates.tsv")
    signs, coherences = ["1", "0", "-1"], ["0.0312", "n/a", "0.9612"]
    header = list(columns) + [c for c in ("phase_sign", "core_phase_coherence") if c not in columns]
    for row, sign, coherence in zip(rows, signs, coherences):
        row["phase_sign"], row["core_phase_coherence"] = sign, coherence
    text = "\t".join(header) + "\n" + "".join("\t".join(str(r[c]) for c in header) + "\n" for r in rows)
    (d / "candidates.tsv").write_text(text)
    page = build_report(d).read_text()
    for words in ("paramagnetic (hemosiderin)", "undecided", "diamagnetic (calcium)"):
        assert f"<dt>dipole</dt><dd>{words}</dd>" in page
    assert page.count("<dt>core phase</dt>") == 2 and "<dd>0.96 " in page and "<dd>0.03 " in page
