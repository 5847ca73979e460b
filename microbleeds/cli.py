"""Command line: ``microbleeds bids | detect | phantom | evaluate | report | review | presets``,
and the BIDS App entry point ``microbleeds-bids bids_dir output_dir {participant,group}``.

A thin layer over the Python API. Exit codes of ``detect`` and ``bids``: 0 every scan done, 1 one
or more scans failed (the others are written), 2 usage error or no scan found.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def sample_data() -> Path:
    """The folder of the bundled sample scan (package data ``microbleeds.sample_data``)."""
    from importlib import resources

    return Path(str(resources.files("microbleeds.sample_data")))


def _detect_parser(sub):
    p = sub.add_parser("detect", help="find microbleeds in NIfTI scans (files or folders)",
                       description="Find cerebral microbleeds in SWI / GRE-T2* NIfTI scans.")
    p.add_argument("paths", nargs="*", type=Path,
                   help="NIfTI files or folders (searched recursively); default: the bundled sample data")
    p.add_argument("-o", "--out", type=Path, default=Path("microbleeds_results"), help="output folder")
    p.add_argument("--pipeline", default=None, help="preset name or TOML path (see 'microbleeds presets')")
    p.add_argument("--mask", type=Path, help="brain mask on the scan's grid (single scan only)")
    p.add_argument("--phase", type=Path, nargs="+",
                   help="phase on the scan's grid (one 4D file or one file per echo; single scan only). "
                        "In folders, phase files are paired automatically (BIDS part-phase, *_phase)")
    p.add_argument("--phase-sign", type=int, choices=(1, -1), dest="phase_sign",
                   help="force the phase convention (+1: paramagnetic = positive frequency); default: from veins")
    p.add_argument("--echo-times", type=float, nargs="+", dest="echo_times_ms",
                   help="echo times in ms (multi-echo phase; default: BIDS sidecars)")
    p.add_argument("--write-swi", action="store_true", help="write swi.nii.gz and phase_filtered.nii.gz (needs phase)")
    p.add_argument("--labels", type=Path, help="segmentation (aparc+aseg, SynthSeg, *_dseg) for MARS regions (single scan)")
    p.add_argument("--labels-t1w", type=Path, dest="labels_t1w",
                   help="T1w the segmentation belongs to, registered to the scan (rigid, mutual information)")
    p.add_argument("--atlas", action="store_true", dest="use_atlas", default=None,
                   help="without --labels, regions from the AAL3 atlas registered to the scan (the default; "
                        "'unknown' when the registration fails its quality check)")
    p.add_argument("--no-atlas", action="store_false", dest="use_atlas", default=None,
                   help="no atlas: without --labels, regions are 'unknown'")
    p.add_argument("--min-diameter", type=float, dest="min_diameter_mm", help="smallest CMB diameter, mm")
    p.add_argument("--max-diameter", type=float, dest="max_diameter_mm",
                   help="largest apparent CMB diameter, mm (10 as in MARS by default; 5 for the narrow definition)")
    p.add_argument("--echo", type=_echo_choice,
                   help="multi-echo magnitude: 'auto' (default: T2*-weighted when the echo times are known, else "
                        "rss with a note), 't2star', 'rss', 'first', 'last', echo-N (BIDS's 1-based echo N) or a "
                        "0-based index")
    p.add_argument("--field-strength", type=float, dest="field_strength_t", help="B0 in tesla (recorded)")
    p.add_argument("--te", type=float, dest="echo_time_ms", help="echo time in ms (recorded)")
    p.add_argument("--brain-coverage", choices=("auto", "whole", "partial"), dest="brain_coverage",
                   help="what the field of view holds, for the brain-mask check: 'whole' brain, 'partial' "
                        "(slab, crop), or 'auto' (from where the mask meets the field of view; default)")
    p.add_argument("--report", action="store_true",
                   help="also write report.html per scan (review page) and cohort.html for the run")
    p.add_argument("--force", action="store_true", help="recompute scans whose results are up to date")
    p.add_argument("--nprocs", type=_positive_int, default=1,
                   help="scans run in this many worker processes (each with cores / N threads; default 1)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS", dest="dask_scheduler",
                   help="run the scans on this Dask cluster (tcp://host:8786, or a scheduler file); its workers "
                        "must see the inputs and the output folder at the same paths (--nprocs is then ignored)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_detect)
    return p


def _echo_choice(text):
    """``--echo``: a name, a 0-based index, or ``echo-N`` (BIDS, 1-based) turned into index N-1."""
    if text.startswith("echo-"):
        number = text[5:]
        if not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(f"echo-N needs a BIDS echo number N >= 1, got {text!r}")
        return str(int(number) - 1)
    return text


DETECT_OPTIONS = ("min_diameter_mm", "max_diameter_mm", "echo", "field_strength_t", "echo_time_ms", "phase_sign",
                  "use_atlas", "brain_coverage")


def run_detect(args):
    """``microbleeds detect``: :func:`microbleeds.batch.detect_folder` over the paths given."""
    from .batch import UsageError, detect_folder

    options = {k: getattr(args, k) for k in DETECT_OPTIONS}
    try:
        with _dask_client(args) as client:
            run = detect_folder(args.paths or [sample_data()], args.out, pipeline=args.pipeline, mask=args.mask,
                                phase=args.phase, labels=args.labels, labels_t1w=args.labels_t1w,
                                echo_times_ms=args.echo_times_ms, write_images=args.write_swi, report=args.report,
                                force=args.force, progress=not args.quiet, nprocs=args.nprocs, client=client,
                                **options)
    except (UsageError, ValueError) as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_detect_summary(run.done, run.skipped, run.failed, args.out, run)
    return EXIT_FAILED if run.failed else EXIT_OK


def _bids_parser(sub=None):
    """The BIDS App's parser: as ``microbleeds bids`` (``sub`` given) or the ``microbleeds-bids`` program."""
    description = ("BIDS App: find cerebral microbleeds in the T2*-weighted scans (T2starw, MEGRE) of a BIDS "
                   "dataset and write BIDS Derivatives (participant level), or the group outputs (group level).")
    if sub is None:
        p = argparse.ArgumentParser(prog="microbleeds-bids", description=description)
        p.add_argument("--version", action="version", version=f"microbleeds {__version__}")
    else:
        p = sub.add_parser("bids", help="BIDS App: bids_dir output_dir {participant,group}", description=description)
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset's root (with dataset_description.json)")
    p.add_argument("output_dir", type=Path, help="the derivatives folder (e.g. bids_dir/derivatives/microbleeds)")
    p.add_argument("analysis_level", choices=("participant", "group"),
                   help="participant: detect in each scan; group: the cohort table, models and page")
    p.add_argument("--participant-label", "--participant_label", nargs="+", dest="participant_label", metavar="LABEL",
                   help="subjects to process (with or without 'sub-'); default: all")
    p.add_argument("--session-label", nargs="+", dest="session_label", metavar="LABEL",
                   help="sessions to process (with or without 'ses-'); default: all")
    p.add_argument("--bids-filter-file", type=Path, dest="bids_filter_file", metavar="FILE",
                   help="JSON of entity: value (or fMRIPrep's {\"t2starw\": {...}}) the scans must match")
    p.add_argument("--swi-acq", nargs="+", default=(), dest="swi_acq", metavar="LABEL",
                   help="acq- labels under which SWI is stored with another anatomical suffix (never maps)")
    p.add_argument("--work-dir", "-w", type=Path, dest="work_dir",
                   help="scratch folder for temporary files (default: the system's)")
    p.add_argument("--nprocs", "--n_cpus", type=_positive_int, default=1, dest="nprocs",
                   help="scans run in this many worker processes (each with cores / N threads; default 1)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS", dest="dask_scheduler",
                   help="run the scans on this Dask cluster (tcp://host:8786, or a scheduler file); its workers "
                        "must see the inputs and the output folder at the same paths (--nprocs is then ignored)")
    p.add_argument("--pipeline", default=None,
                   help="preset name or TOML path; default: chosen per scan from its MagneticFieldStrength")
    p.add_argument("--write-swi", action="store_true", help="also write the SWI and filtered phase (with phase)")
    p.add_argument("--report", action="store_true", help="also write the review pages")
    p.add_argument("--phase-sign", type=int, choices=(1, -1), dest="phase_sign", help="force the phase convention")
    p.add_argument("--atlas", action="store_true", dest="use_atlas", default=None,
                   help="regions from the AAL3 atlas registered to each scan (the default)")
    p.add_argument("--no-atlas", action="store_false", dest="use_atlas", default=None,
                   help="no atlas regions")
    p.add_argument("--brain-coverage", choices=("auto", "whole", "partial"), dest="brain_coverage")
    p.add_argument("--max-diameter", type=float, dest="max_diameter_mm", help="largest apparent CMB diameter, mm")
    p.add_argument("--force", action="store_true", help="recompute scans whose results are up to date")
    p.add_argument("-v", "--verbose", action="count", default=0, help="list what was not processed and why")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the final line and errors")
    _group_arguments(p)
    p.set_defaults(func=run_bids)
    return p


def _group_arguments(parser):
    """The group level's options (microbleeds.group), when that package provides them."""
    try:
        from .group import add_group_arguments
    except ImportError:
        return
    add_group_arguments(parser)


def run_bids(args):
    """The BIDS App: ``participant`` = :func:`microbleeds.batch.detect_folder` on the dataset with
    BIDS Derivatives output; ``group`` = the group outputs from those results."""
    from .io.bids import is_bids_dataset

    if not is_bids_dataset(args.bids_dir):
        print(f"microbleeds: error: {args.bids_dir}: not a BIDS dataset (no dataset_description.json)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.work_dir:  # temporary files of this process and of the worker processes it starts
        import os
        import tempfile

        args.work_dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = os.environ["TMPDIR"] = str(args.work_dir.resolve())
    if args.analysis_level == "group":
        return _run_group(args)
    return _run_participant(args)


@contextmanager
def _dask_client(args):
    """A client of the Dask cluster of ``--dask-scheduler`` (closed after), or None (raises a
    one-line ValueError when the scheduler cannot be reached)."""
    if not getattr(args, "dask_scheduler", None):
        yield None
        return
    from .workers import client_from_address

    client = client_from_address(args.dask_scheduler)
    try:
        yield client
    finally:
        client.close()


def _run_participant(args):
    from .batch import UsageError, detect_folder
    from .io.bids import read_filter_file

    options = {k: getattr(args, k, None) for k in DETECT_OPTIONS}
    try:
        filters = read_filter_file(args.bids_filter_file) if args.bids_filter_file else None
        with _dask_client(args) as client:
            run = detect_folder([args.bids_dir], args.output_dir, pipeline=args.pipeline,
                                write_images=args.write_swi, report=args.report, force=args.force,
                                progress=not args.quiet, nprocs=args.nprocs, client=client,
                                participant_label=args.participant_label, session_label=args.session_label,
                                bids_filters=filters, swi_acq=args.swi_acq, **options)
    except (UsageError, ValueError) as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.quiet:
        print(f"{len(run.done)} done, {len(run.skipped)} up to date, {len(run.failed)} failed -> {args.output_dir}")
    else:
        _print_detect_summary(run.done, run.skipped, run.failed, args.output_dir, run, verbose=args.verbose)
    return EXIT_FAILED if run.failed else EXIT_OK


def _run_group(args):
    """The group level (:mod:`microbleeds.group`): the group table, models and page, and the cohort
    table and page of the participant level's results."""
    from .group import run_group_level
    from .review.cohort import write_cohort

    if not args.output_dir.is_dir():
        print(f"microbleeds: error: {args.output_dir}: no participant-level results", file=sys.stderr)
        return EXIT_USAGE
    try:
        written = run_group_level(args.bids_dir, args.output_dir, args)
    except ValueError as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cohort = write_cohort(args.output_dir)
    for path in (written.values() if isinstance(written, dict) else written or []):
        print(path)
    print(f"cohort table {cohort['tsv']}; page {cohort['html']}")
    return EXIT_OK


def _dispatch(args):
    """Run the parsed sub-command: an input that cannot be used is one line, Ctrl-C exit 130."""
    try:
        return args.func(args)
    except InputError as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def bids_main(argv=None):
    """``microbleeds-bids``: the BIDS App entry point (``bids_dir output_dir {participant,group}``)."""
    warnings.formatwarning = _one_line_warning
    args = _bids_parser().parse_args(argv)
    return _dispatch(args)


def _print_detect_summary(done, skipped, failed, out, run=None, verbose=0):
    if done:
        width = max(len(str(p.name)) for p, _, _ in done)
        print(f"{'scan':<{width}}  CMBs  definite  burden  candidates")
        for path, _, summary in done:
            counts = summary["counts"]
            print(f"{path.name:<{width}}  {counts['total']:>4}  {counts['definite']:>8}  "
                  f"{summary['burden_category']:>6}  {summary['candidates']:>10}")
    not_scans = run.not_scans if run is not None else []
    print(f"{len(done)} done, {len(skipped)} up to date, {len(failed)} failed"
          + (f", {len(not_scans)} not T2*-weighted scans skipped" if not_scans else "") + f" -> {out}")
    for _, message in failed:
        print(f"  failed: {message}")
    if verbose:
        for path, reason in not_scans:
            print(f"  not processed: {path}: {reason}")
    if run is not None and run.log is not None:
        print(f"log: {run.log}")


def _phantom_parser(sub):
    p = sub.add_parser("phantom", help="simulate an annotated SWI/GRE phantom (magnitude, phase, truth)",
                       description="Simulate a phantom from a susceptibility model (dipole field, blooming).")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--name", default="phantom", help="file name prefix")
    p.add_argument("--b0", type=float, default=3.0, dest="b0_t", help="field strength, T")
    p.add_argument("--te", type=float, default=20.0, dest="te_ms", help="echo time, ms")
    p.add_argument("--voxel-size", type=float, nargs=3, default=(1.0, 1.0, 2.0), dest="voxel_size_mm",
                   metavar=("X", "Y", "Z"), help="voxel size, mm")
    p.add_argument("--fov", type=float, nargs=3, default=None, dest="fov_mm", metavar=("X", "Y", "Z"),
                   help="field of view, mm")
    p.add_argument("--snr", type=float, default=20.0, help="white-matter signal / noise sigma (0: no noise)")
    p.add_argument("--n-cmb", type=int, default=10, help="number of microbleeds")
    p.add_argument("--n-calcifications", type=int, default=2, help="number of calcifications")
    p.add_argument("--n-veins", type=int, default=None, help="number of vein trees (default 70)")
    p.add_argument("--anatomy", choices=("analytic", "mni"), default="analytic",
                   help="analytic head, or the ICBM152 2009 tissue maps shipped with nilearn (extra 'anatomy')")
    p.add_argument("--int16", action="store_true", help="store 12-bit integers with a scale factor (smaller files)")
    p.add_argument("--labels", action="store_true", dest="include_labels",
                   help="also write <name>_dseg.nii.gz, a FreeSurfer-style segmentation (for --labels of detect)")
    p.add_argument("--sample", action="store_true", help="write the small sample scan shipped in sample_data/")
    p.add_argument("--oblique", type=float, nargs=3, default=(0.0, 0.0, 0.0), dest="oblique_deg",
                   metavar=("RX", "RY", "RZ"), help="rotation of the acquisition grid, degrees")
    p.add_argument("--no-air", action="store_false", dest="with_air_interface", help="no air-tissue interface")
    p.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic per seed)")
    p.set_defaults(func=run_phantom)


def run_phantom(args):
    from .bench.phantoms import PhantomParams, make_sample, simulate, write_phantom

    if args.sample:
        for path in make_sample(args.out, name=args.name if args.name != "phantom" else "sample").values():
            print(path)
        return EXIT_OK
    values = {k: getattr(args, k) for k in ("b0_t", "te_ms", "snr", "n_cmb", "n_calcifications",
                                             "oblique_deg", "with_air_interface", "seed", "anatomy")}
    if args.n_veins is not None:
        values["n_veins"] = args.n_veins
    values["voxel_size_mm"] = tuple(args.voxel_size_mm)
    values["snr"] = args.snr or None
    if args.fov_mm:
        values["fov_mm"] = tuple(args.fov_mm)
    try:
        params = PhantomParams(**values)
        phantom = simulate(params)
    except (ValueError, ImportError, NotImplementedError) as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args.out.mkdir(parents=True, exist_ok=True)
    paths = write_phantom(phantom, args.out, args.name, dtype="int16" if args.int16 else "float32",
                          include_labels=args.include_labels)
    n_cmb = sum(1 for t in phantom.truth if t["type"] == "cmb")
    print(f"{args.name}: {n_cmb} CMBs, {len(phantom.truth) - n_cmb} calcifications -> {args.out}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return EXIT_OK


def _warmup_parser(sub):
    p = sub.add_parser("warmup", help="compile the numba kernels into numba's cache (once per node image)",
                       description="Compile every numba kernel the detector uses (one detection on the bundled "
                                   "sample), so that the first scan on this machine does not pay for it.")
    p.add_argument("--cache-dir", type=Path, dest="cache_dir",
                   help="numba cache folder (sets NUMBA_CACHE_DIR; may be on a shared file system: give the "
                        "workers the same NUMBA_CACHE_DIR)")
    p.set_defaults(func=run_warmup)
    return p


def run_warmup(args):
    """``microbleeds warmup``: :func:`microbleeds.warmup.warm`."""
    from .warmup import warm

    try:
        report = warm(args.cache_dir)
    except (OSError, ValueError) as exc:
        print(f"microbleeds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(report.line())
    return EXIT_OK


def _presets_parser(sub):
    p = sub.add_parser("presets", help="list the installed pipeline presets")
    p.set_defaults(func=run_presets)


def run_presets(args):
    from .presets import preset_names, read_preset

    for name in preset_names():
        info = read_preset(name).get("pipeline", {})
        print(f"{name:<14} v{info.get('version', '?'):<3} {info.get('description', '')}")
    return EXIT_OK


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="score detection results against phantom ground truth")
    p.add_argument("truth_dir", help="folder with <name>_truth.tsv files (searched recursively)")
    p.add_argument("results_dir", help="detector output folder: per-scan folders <name>*/lesions.tsv or BIDS Derivatives <name>*_desc-cmb_lesions.tsv, searched recursively")
    p.add_argument("-o", "--output", default=None,
                   help="write evaluation.json, evaluation_scans.tsv, evaluation_matches.tsv and evaluation.txt here")
    p.add_argument("--max-distance", type=float, default=3.0, metavar="MM",
                   help="largest centroid distance of a match, mm (default %(default)s)")
    p.add_argument("--diameter-bins", type=_edges, default=(1.0, 1.5, 2.5, 5.0), metavar="EDGES",
                   help="true-diameter bin edges, mm, comma-separated (default 1,1.5,2.5,5)")
    p.add_argument("--definite-only", action="store_true", help="count only lesions with certainty 'definite'")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out truth files without a results folder instead of failing")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=run_evaluate)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1 is needed, got {text!r}")
    return value


def _edges(text):
    from .bench.evaluate import check_edges

    try:
        return tuple(check_edges([x for x in text.replace(" ", ",").split(",") if x]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_evaluate(args):
    from .bench.evaluate import evaluate_folders, format_table, write_evaluation

    result = evaluate_folders(args.truth_dir, args.results_dir, max_distance_mm=args.max_distance,
                              diameter_edges_mm=args.diameter_bins, include_possible=not args.definite_only,
                              on_missing="skip" if args.skip_missing else "error")
    if not args.quiet:
        print(format_table(result))
    if args.output:
        paths = write_evaluation(result, args.output)
        if not args.quiet:
            print("wrote " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK


def _report_parser(sub):
    p = sub.add_parser("report", help="(re)build the HTML review pages of existing results")
    p.add_argument("out", type=Path, help="a run's output folder (or one scan's result folder)")
    p.add_argument("--neurological", action="store_true", help="show patient's right on the right")
    p.set_defaults(func=run_report)


def run_report(args):
    from .review.cohort import write_cohort
    from .review.page import build_reports

    if not args.out.is_dir():
        print(f"microbleeds: error: {args.out}: no such results folder", file=sys.stderr)
        return EXIT_USAGE
    pages = build_reports(args.out, radiological=not args.neurological)
    cohort = write_cohort(args.out)
    print(f"{len(pages)} report(s) written; cohort page {cohort['html']}")
    return EXIT_OK if pages else EXIT_FAILED


def _review_parser(sub):
    p = sub.add_parser("review", help="fold a reader's decisions into the results")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    apply = actions.add_parser("apply", help="apply decisions.tsv saved from report.html")
    apply.add_argument("decisions", type=Path, help="decisions TSV saved from the report page")
    apply.add_argument("out", type=Path, help="the scan's result folder, or the run's output folder")
    apply.set_defaults(func=run_review_apply)


def run_review_apply(args):
    from .io.derivatives import scan_dir_of
    from .review.cohort import write_cohort
    from .review.decisions import apply_review
    from .review.page import build_report

    paths = apply_review(args.decisions, args.out)
    folder = scan_dir_of(paths["lesions"])  # a result folder, or a BIDS Derivatives prefix
    build_report(folder)
    root = args.out if args.out != folder else folder.parent
    write_cohort(root)
    print(f"reviewed table {paths['lesions']}; summary {paths['summary']}")
    return EXIT_OK


def build_parser():
    parser = argparse.ArgumentParser(prog="microbleeds", description="Find cerebral microbleeds on SWI and GRE-T2* brain MRI.")
    parser.add_argument("--version", action="version", version=f"microbleeds {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _bids_parser(sub)
    _detect_parser(sub)
    _phantom_parser(sub)
    _evaluate_parser(sub)
    _report_parser(sub)
    _review_parser(sub)
    _presets_parser(sub)
    _warmup_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None):
    """Warnings as the command line shows them: one line, no source code."""
    return f"microbleeds: warning: {message}\n"


def main(argv=None):
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return _dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
