"""Result folders under faults: a kill at every write step, two writers at once, hostile names,
stale staging folders. The reader's review is the one thing in a result folder that cannot be
recomputed: it must survive all of them, and the next run must put things right."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from synthetic import lock_held_elsewhere

from microbleeds.contract import (
    LESIONS_FILE,
    RESULT_FILES,
    REVIEW_DECISIONS_FILE,
    REVIEW_FILES,
    REVIEWED_LESIONS_FILE,
    REVIEWED_SUMMARY_FILE,
    SUMMARY_FILE,
    SUPERSEDED_REVIEW_DIR,
)
from microbleeds.errors import InputError
from microbleeds.io.results import (
    FolderBusy,
    recover_results,
    write_result_files,
)

REVIEW = {REVIEW_DECISIONS_FILE: b"sha256\tcandidate_id\tdecision\nab\t1\tconfirmed\n",
          REVIEWED_LESIONS_FILE: b"lesion_id\treviewed_status\n1\tconfirmed\n",
          REVIEWED_SUMMARY_FILE: b'{"review": {"complete": true}}\n'}


def _files(version: int, lesions: bytes = b"lesion_id\n1\n") -> dict:
    """A result set (file name -> bytes); ``version`` marks the summary."""
    files = {f: f"{f} v{version}\n".encode() for f in RESULT_FILES}
    files[LESIONS_FILE] = lesions
    files[SUMMARY_FILE] = f'{{"version": {version}}}\n'.encode()
    return files


def _reviewed_result(out: Path, name="scan") -> Path:
    """out/<name> holding result v1 and a reader's review, beside a file and a folder of the user's."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "keep.txt").write_text("the user's")
    write_result_files(_files(0), out, "neighbour")
    folder = write_result_files(_files(1), out, name)
    for f, data in REVIEW.items():
        (folder / f).write_bytes(data)
    return folder


def _all_files(*folders) -> dict:
    found = {}
    for folder in folders:
        if folder.is_dir():
            found.update({p: p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    return found


def _version(folder: Path):
    if not all((folder / f).is_file() for f in RESULT_FILES):
        return None
    return (folder / SUMMARY_FILE).read_text()


def _leftovers(out: Path) -> list[str]:
    return sorted(e for e in os.listdir(out) if e.startswith("."))


def _assert_clean(out: Path):
    assert _leftovers(out) == []
    assert (out / "keep.txt").read_text() == "the user's"
    assert _version(out / "neighbour") == '{"version": 0}\n'


# --------------------------------------------------------------------------- a real kill at each step
WRITE_STEPS = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "remove"), (os, "rmdir"), (os, "mkdir"),
               (os, "chmod"), (shutil, "copy2"), (shutil, "copytree"), (tempfile, "mkdtemp"),
               (Path, "write_bytes")]
"""Every call by which the result writer changes the file system (shutil.rmtree goes through
os.unlink and os.rmdir, so a kill also lands half-way through a tree's removal)."""


def _run_killed_at(step: int, action) -> bool:
    """Run ``action`` in a forked child that SIGKILLs itself just before its ``step``-th write
    call; True when it was killed, False when it finished before reaching that step."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no return
        try:
            count = [0]

            def wrap(function):
                def counted(*args, **kwargs):
                    count[0] += 1
                    if count[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)
                return counted

            for owner, name in WRITE_STEPS:
                setattr(owner, name, wrap(getattr(owner, name)))
            action()
            os._exit(0)
        except BaseException:  # noqa: BLE001 - any other end of the child is a failure
            os._exit(3)
    _pid, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the writer failed without being killed"
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("same_lesions", [True, False], ids=["same-result", "changed-result"])
def test_a_kill_at_any_write_step_loses_neither_result_nor_review(tmp_path, same_lesions):
    new = _files(2) if same_lesions else _files(2, lesions=b"lesion_id\n1\n2\n")
    review_home = "" if same_lesions else SUPERSEDED_REVIEW_DIR
    steps = 0
    for step in range(1, 400):
        out = tmp_path / f"k{step}"
        folder = _reviewed_result(out)
        if not _run_killed_at(step, lambda out=out: write_result_files(new, out, "scan")):
            break
        steps += 1
        old = out / ".scan.old"
        # right after the kill: the previous or the new result is whole, in place or in .scan.old
        assert _version(folder) or _version(old) == '{"version": 1}\n', f"step {step}"
        # and every review file still exists somewhere
        kept = set(_all_files(folder, old).values())
        assert all(data in kept for data in REVIEW.values()), f"review lost at step {step}"
        # the next run's recovery (here alone): a whole result with the review, nothing left over
        recover_results(out)
        assert _version(folder) in ('{"version": 1}\n', '{"version": 2}\n'), f"step {step}"
        kept = set(_all_files(folder).values())
        assert all(data in kept for data in REVIEW.values()), f"review not recovered at step {step}"
        _assert_clean(out)
        # and the next write, as with --force
        write_result_files(new, out, "scan")
        assert _version(folder) == '{"version": 2}\n'
        for f, data in REVIEW.items():
            assert (folder / review_home / f).read_bytes() == data, f"step {step}"
        _assert_clean(out)
        shutil.rmtree(out)
    print("kill steps", steps)
    assert steps >= 15  # every step of the swap was hit (the count grows with the code's steps)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_while_applying_a_review_leaves_each_review_file_old_or_new(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "review"))
    from conftest_browser import make_scan_output

    from microbleeds.review.decisions import apply_review

    scan = make_scan_output(tmp_path / "base", n_candidates=3, with_phase=False)
    sha = (scan / SUMMARY_FILE).read_text().split('"sha256": "')[1][:64]

    def decisions(path, decision):
        path.write_text("sha256\tcandidate_id\tlesion_id\tdecision\tmimic_type\treviewer\ttime\n"
                        + "".join(f"{sha}\t{c}\t{c}\t{decision}\t\tDr A\t2026-01-01\n" for c in (1, 2, 3)))
        return path

    apply_review(decisions(tmp_path / "first.tsv", "confirmed"), scan)
    first = {f: (scan / f).read_bytes() for f in REVIEW_FILES}
    second_tsv = decisions(tmp_path / "second.tsv", "rejected")
    shutil.copytree(scan, tmp_path / "second" / "scan")
    apply_review(second_tsv, tmp_path / "second" / "scan")
    second = {f: (tmp_path / "second" / "scan" / f).read_bytes() for f in REVIEW_FILES}
    for step in range(1, 100):
        work = tmp_path / f"w{step}"
        shutil.copytree(scan, work / "scan")
        if not _run_killed_at(step, lambda work=work: apply_review(second_tsv, work / "scan")):
            break
        for f in REVIEW_FILES:
            assert (work / "scan" / f).read_bytes() in (first[f], second[f]), f"{f} damaged at step {step}"
        shutil.rmtree(work)
    print("kill steps", step)
    assert step > 2


# --------------------------------------------------------------------------- injected failures
@pytest.mark.parametrize("where", ["write_bytes", "copy2", "first_rename", "second_rename"])
def test_a_failed_write_leaves_the_previous_result_and_its_review_in_place(tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    before = _all_files(folder)
    real_replace = os.replace
    renames = []

    def failing_replace(src, dst):
        renames.append(src)
        if (where == "first_rename" and len(renames) == 1) or (where == "second_rename" and len(renames) == 2):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if where == "write_bytes":
        monkeypatch.setattr(Path, "write_bytes", fail)
    elif where == "copy2":
        monkeypatch.setattr(shutil, "copy2", fail)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        write_result_files(_files(2), out, "scan")
    monkeypatch.undo()
    assert _all_files(folder) == before
    _assert_clean(out)


# --------------------------------------------------------------------------- two writers
def test_a_folder_being_written_fails_cleanly_for_the_second_writer(tmp_path):
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    with lock_held_elsewhere(folder):
        with pytest.raises(FolderBusy) as info:
            write_result_files(_files(2), out, "scan")
        message = str(info.value)
        assert "being written by another run" in message and "\n" not in message
        assert message.startswith(str(folder))
        assert isinstance(info.value, InputError)
    assert _version(folder) == '{"version": 1}\n'
    write_result_files(_files(2), out, "scan")  # free again
    _assert_clean(out)


def test_two_writers_at_once_never_damage_the_folder_or_the_review(tmp_path):
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    errors, busy = [], []
    start = threading.Barrier(2)

    def writer(version):
        start.wait()
        for _ in range(30):
            try:
                write_result_files(_files(version), out, "scan")
            except FolderBusy:
                busy.append(version)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _version(folder) in ('{"version": 2}\n', '{"version": 3}\n')
    for f, data in REVIEW.items():
        assert (folder / f).read_bytes() == data
    _assert_clean(out)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_processes_at_once(tmp_path):
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    pids = []
    for version in (2, 3):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for _ in range(30):
                    try:
                        write_result_files(_files(version), out, "scan")
                    except FolderBusy:
                        pass
            except BaseException:  # noqa: BLE001
                code = 3
            os._exit(code)
        pids.append(pid)
    assert [os.waitpid(pid, 0)[1] for pid in pids] == [0, 0]
    assert _version(folder) in ('{"version": 2}\n', '{"version": 3}\n')
    for f, data in REVIEW.items():
        assert (folder / f).read_bytes() == data
    _assert_clean(out)


# --------------------------------------------------------------------------- names and staging
@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", ".hidden", "a\nb", "x" * 250])
def test_a_bad_result_name_is_refused_and_nothing_is_touched(tmp_path, name):
    out = tmp_path / "out"
    _reviewed_result(out)
    before = _all_files(tmp_path)
    with pytest.raises(InputError, match="result folder name"):
        write_result_files(_files(2), out, name)
    assert _all_files(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]
    _assert_clean(out)


def test_staging_is_inside_the_output_folder(tmp_path, monkeypatch):
    made = []
    real = tempfile.mkdtemp

    def recording(*args, **kwargs):
        made.append(Path(kwargs["dir"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    write_result_files(_files(1), tmp_path / "out", "scan")
    assert made == [tmp_path / "out"]


def test_a_folder_that_is_not_a_result_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match="not a result folder"):
        write_result_files(_files(1), out, "data")
    assert (out / "data" / "thesis.docx").read_text() == "years of work"
    assert _leftovers(out) == []


def test_stale_staging_folders_are_cleaned_but_not_those_of_a_live_writer(tmp_path):
    out = tmp_path / "out"
    _reviewed_result(out)
    for stale in (".scan.abcd1234.tmp", ".other.zz_9y8x7.tmp", ".busy.qwer5678.tmp"):
        (out / stale).mkdir()
        (out / stale / LESIONS_FILE).write_text("half written")
    (out / ".gone.lock").write_text("")  # a lock file left by a killed run
    write_result_files(_files(2), out, "scan")  # the scan's own staging goes with its write
    assert not (out / ".scan.abcd1234.tmp").exists()
    assert (out / ".other.zz_9y8x7.tmp").exists()
    with lock_held_elsewhere(out / "busy"):
        recover_results(out)  # what a later run does first
        assert _leftovers(out) == [".busy.lock", ".busy.qwer5678.tmp"]
    recover_results(out)
    _assert_clean(out)


def test_a_kill_between_the_renames_is_recovered_even_under_force(tmp_path):
    """The state a kill between the two renames leaves: no result folder, the old one (with the
    review) hidden, the new one staged. The next run restores it; nothing deletes the review."""
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    staged = out / ".scan.abcd1234.tmp"
    shutil.copytree(folder, staged)
    os.replace(folder, out / ".scan.old")
    write_result_files(_files(2), out, "scan")  # the next run (as with --force)
    for f, data in REVIEW.items():
        assert (folder / f).read_bytes() == data
    assert _version(folder) == '{"version": 2}\n'
    _assert_clean(out)


def test_an_old_folder_beside_a_result_keeps_a_review_the_result_lacks(tmp_path):
    """Left by an earlier version (or by hand): .scan.old holds a review the result folder has
    not. It is kept (superseded_review/recovered/) before .scan.old goes."""
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    shutil.copytree(folder, out / ".scan.old")
    for f in REVIEW:
        (folder / f).unlink()
    write_result_files(_files(2), out, "scan")
    for f, data in REVIEW.items():
        assert (folder / SUPERSEDED_REVIEW_DIR / "recovered" / f).read_bytes() == data
    _assert_clean(out)


def test_a_superseded_review_is_kept_over_further_reruns(tmp_path):
    out = tmp_path / "out"
    folder = _reviewed_result(out)
    write_result_files(_files(2, lesions=b"lesion_id\n1\n2\n"), out, "scan")  # review superseded
    (folder / REVIEW_DECISIONS_FILE).write_bytes(b"a second review\n")
    write_result_files(_files(3, lesions=b"lesion_id\n"), out, "scan")       # and again
    write_result_files(_files(4, lesions=b"lesion_id\n3\n"), out, "scan")    # and again
    superseded = folder / SUPERSEDED_REVIEW_DIR
    assert (superseded / REVIEW_DECISIONS_FILE).read_bytes() == b"a second review\n"
    assert (superseded / "earlier-1" / REVIEW_DECISIONS_FILE).read_bytes() == REVIEW[REVIEW_DECISIONS_FILE]
    _assert_clean(out)
