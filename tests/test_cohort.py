"""rtkit.cohort: many cases on local processes or a Dask cluster, failures, resume, the CLI.

The cohort: 30 small synthetic cases (HFS, FFS, HFP, FFP, oblique and
decubitus series, varied CT and dose grids, ROI names that need the
structure map) and 3 broken ones (a truncated RT Dose, no RT Structure Set,
a structure set in another frame of reference).  Expected values are
computed here, case by case, with ``rtkit.load`` and ``rtkit.dvh``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _cohort_cases import NAMES, USER_MAP, CrashingMap, write_cohort, write_cohort_case

import rtkit
from rtkit import cohort
from rtkit.cli import main

N_GOOD = 30
METRICS = ["PTV:D95%", "PTV:D2%", "Lung_L:V20Gy[%]", "Lung_L:Dmean", "Heart:Dmean", "Heart:D0.03cc", "Dmax"]
BROKEN = {"broken_truncated_dose": ("DicomReadError", "truncated"),
          "broken_no_rtstruct": ("CohortError", "no RT Structure Set"),
          "broken_frame_mismatch": ("FrameOfReferenceError", "frame of reference")}
UNITS = {"D95%": "Gy", "D2%": "Gy", "V20Gy[%]": "% vol", "Dmean": "Gy", "D0.03cc": "Gy", "Dmax": "Gy"}


def _expected(root: Path, info: dict) -> dict[tuple[str, str, str], tuple[str, float]]:
    """(case, standard name, metric) -> (local ROI name, value) from single-case rtkit.dvh calls."""
    out = {}
    for cid, meta in info.items():
        if "defect" in meta:
            continue
        case = rtkit.load(root / cid)
        for std, local in meta["names"].items():
            h = rtkit.dvh(case.dose, case.structures[local])
            asked = [m.split(":")[1] for m in METRICS if m.startswith(std + ":")] + ["Dmax"]
            for m in asked:
                out[(cid, std, m)] = (local, h[m])
    return out


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "cases"
    info = write_cohort(root, N_GOOD)
    return root, info, _expected(root, info)


@pytest.fixture(scope="module")
def reference(cohort_dir, tmp_path_factory):
    """The whole cohort in one go on 2 local processes: (result, CSV path)."""
    root, _, _ = cohort_dir
    out = tmp_path_factory.mktemp("ref") / "table.csv"
    res = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)
    return res, out


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _key(r: dict) -> tuple[str, str, str]:
    return (r["case"], r["structure"], r["metric"])


# ------------------------------------------------------------------ the whole cohort
def test_the_cohort_covers_orientations_and_names(cohort_dir):
    _, info, _ = cohort_dir
    good = [m for m in info.values() if "defect" not in m]
    assert len(good) >= 30
    assert {"HFS", "FFS", "HFP", "OBLIQUE", "HFDL"} <= {m["orientation"] for m in good}
    # names that only the map relates to the standard ones
    locals_ = {m["names"]["Lung_L"] for m in good} | {m["names"]["Heart"] for m in good}
    assert {"Lt Lung", "lung left", "Herz", "cuore_1"} <= locals_


def test_run_lists_exactly_the_three_failures_and_matches_single_case_dvh(cohort_dir, reference):
    root, info, expected = cohort_dir
    res, out = reference
    assert res.complete and res.computed == len(info) and res.skipped == 0
    assert res.cases == sorted(info, key=res.cases.index) and set(res.cases) == set(info)
    failed = {f["case"]: f for f in res.failures}
    assert set(failed) == set(BROKEN)
    for cid, (kind, words) in BROKEN.items():
        assert failed[cid]["error"].startswith(kind + ":"), failed[cid]
        assert words in failed[cid]["error"], failed[cid]
        assert failed[cid]["patient_id"] == info[cid]["patient_id"]
    got = {_key(r): r for r in res.rows}
    assert len(got) == len(res.rows), "duplicate (case, structure, metric) rows"
    assert set(got) == set(expected)
    for k, (local, value) in expected.items():
        r = got[k]
        assert r["status"] == "ok" and r["error"] == ""
        assert r["roi"] == local and r["patient_id"] == info[k[0]]["patient_id"]
        assert r["value"] == value, (k, r["value"], value)
        assert r["unit"] == UNITS[k[2]]
    # the file holds the same table, failures included, in case order
    rows = _csv_rows(out)
    assert [_key(r) for r in rows] == [_key(r) for r in res.table]
    assert {r["case"] for r in rows if r["status"] == "failed"} == set(BROKEN)
    for r in rows:
        if r["status"] == "ok":
            assert float(r["value"]) == got[_key(r)]["value"]  # repr round-trips exactly
    order = [r["case"] for r in rows]
    assert order == sorted(order, key=res.cases.index)


def test_parquet_copy_and_pandas_agree_with_the_csv(reference):
    pd = pytest.importorskip("pandas")
    res, out = reference
    assert res.parquet == out.with_suffix(".parquet") and res.parquet.is_file()
    pq = pd.read_parquet(res.parquet)
    csvt = pd.read_csv(out, keep_default_na=False, na_values={"value": ["nan"]})
    assert list(pq.columns) == list(cohort.COLUMNS)
    assert pq[["case", "structure", "metric"]].values.tolist() == csvt[["case", "structure", "metric"]].values.tolist()
    ok = pq["status"] == "ok"
    assert (pq.loc[ok, "value"].to_numpy() == csvt.loc[ok, "value"].to_numpy()).all()
    df = res.to_pandas()
    assert len(df) == len(res.rows) and set(df["status"]) == {"ok"}
    assert len(res.to_pandas(failures=True)) == len(res.rows) + len(BROKEN)


def test_stopped_midway_then_resumed_gives_the_same_table(cohort_dir, reference, tmp_path):
    root, info, _ = cohort_dir
    ref, ref_out = reference
    out = tmp_path / "t.csv"
    seen = []
    first = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out, max_cases=12,
                       on_case=lambda o: seen.append(o["case"]))
    assert not first.complete and first.computed == 12 and len(seen) == 12
    assert len({r["case"] for r in _csv_rows(out)}) == 12
    second = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)
    assert second.complete and second.skipped == 12 and second.computed == len(info) - 12
    assert out.read_bytes() == ref_out.read_bytes()
    assert second.rows == ref.rows and second.failures == ref.failures
    third = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)  # nothing left to do
    assert third.computed == 0 and third.skipped == len(info)
    assert out.read_bytes() == ref_out.read_bytes()


def test_a_run_stopped_by_an_exception_keeps_what_it_wrote(cohort_dir, reference, tmp_path):
    root, _, _ = cohort_dir
    _, ref_out = reference
    out = tmp_path / "t.csv"
    count = []

    def stop(outcome):
        count.append(outcome)
        if len(count) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out, on_case=stop)
    assert len({r["case"] for r in _csv_rows(out)}) == 5
    cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)
    assert out.read_bytes() == ref_out.read_bytes()


def test_killed_process_then_resumed_gives_the_same_table(cohort_dir, reference, tmp_path):
    root, info, _ = cohort_dir
    _, ref_out = reference
    out = tmp_path / "t.csv"
    mapfile = tmp_path / "map.json"
    mapfile.write_text(json.dumps(USER_MAP))
    code = "import sys; from rtkit.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "cohort", str(root), "--metrics", ",".join(METRICS),
                             "--out", str(out), "--structure-map", str(mapfile), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len({r["case"] for r in _csv_rows(out)}) >= 3:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = {r["case"] for r in _csv_rows(out)}
    assert 3 <= len(done) < len(info)
    res = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)
    assert res.complete and res.skipped == len(done)
    assert out.read_bytes() == ref_out.read_bytes()


def test_a_block_torn_by_a_kill_is_redone(cohort_dir, reference, tmp_path, caplog):
    root, _, _ = cohort_dir
    _, ref_out = reference
    text = ref_out.read_text()
    lines = text.splitlines(keepends=True)
    cases = [r["case"] for r in _csv_rows(ref_out)]
    sixth = sorted(set(cases), key=cases.index)[5]
    first_of_sixth = 1 + cases.index(sixth)
    # header + five whole cases + two rows of the sixth and half of its third: a torn write
    torn = "".join(lines[: first_of_sixth + 2]) + lines[first_of_sixth + 2][:17]
    out = tmp_path / "t.csv"
    out.write_text(torn)
    with caplog.at_level("WARNING", logger="rtkit.cohort"):
        res = cohort.run(root, METRICS, structure_map=USER_MAP, workers=2, out=out)
    assert res.skipped == 5
    assert any("cut short" in r.message and sixth in r.message for r in caplog.records)
    assert out.read_bytes() == ref_out.read_bytes()


# ------------------------------------------------------------------ Dask
def test_dask_local_cluster_gives_the_identical_table(cohort_dir, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, _, _ = cohort_dir
    ref, ref_out = reference
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        with distributed.Client(cluster) as client:
            res = cohort.run(root, METRICS, structure_map=USER_MAP, scheduler=client, out=tmp_path / "a.csv")
            pids = set(client.run(os.getpid).values())
        by_address = cohort.run(root, METRICS, structure_map=USER_MAP, scheduler=cluster.scheduler_address,
                                out=tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == ref_out.read_bytes()
    assert (tmp_path / "b.csv").read_bytes() == ref_out.read_bytes()
    assert res.rows == ref.rows and res.failures == ref.failures and by_address.rows == ref.rows
    assert len(pids) == 2 and os.getpid() not in pids


def test_missing_dask_names_the_extra(cohort_dir, monkeypatch):
    root, _, _ = cohort_dir
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    with pytest.raises(rtkit.MissingDependencyError, match=r"rtkit\[dask\]"):
        cohort.run([root / "case000"], ["PTV:Dmean"], scheduler="tcp://127.0.0.1:1")


def test_missing_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(rtkit.MissingDependencyError, match=r"rtkit\[table\]"):
        cohort.CohortResult().to_pandas()


# ------------------------------------------------------------------ modes, sources, rows
def test_case_folders_in_this_process_equal_the_pool(cohort_dir, reference):
    root, _, _ = cohort_dir
    ref, _ = reference
    picked = ["case003", "broken_no_rtstruct", "case004", "case011"]
    res = cohort.run([root / c for c in picked], METRICS, structure_map=USER_MAP, workers=1)
    assert res.cases == picked and res.out is None
    assert res.rows == [r for r in ref.rows if r["case"] in picked]
    assert [f["case"] for f in res.failures] == ["broken_no_rtstruct"]


def test_a_dying_worker_fails_only_its_case(cohort_dir, reference):
    root, _, _ = cohort_dir
    ref, _ = reference
    tasks = cohort._tasks([root / c for c in ("case000", "case001", "case002", "case005")],
                          cohort._parse_requests(METRICS), None, cohort.StructureMap(USER_MAP), None, "smooth", False)
    tasks[1] = replace(tasks[1], structure_map=CrashingMap())
    outcomes = {o["case"]: o for o in cohort._pool(tasks, 2)}
    assert set(outcomes) == {"case000", "case001", "case002", "case005"}
    assert "worker process died" in outcomes["case001"]["failure"]
    for c in ("case000", "case002", "case005"):
        assert outcomes[c]["failure"] is None
        rows = [r for r in cohort._outcome_rows(outcomes[c])]
        assert [(r["structure"], r["metric"], r["value"]) for r in rows] == [
            (r["structure"], r["metric"], r["value"]) for r in ref.rows if r["case"] == c]


def test_missing_and_empty_structures_and_undefined_metrics_are_rows(tmp_path):
    folder = tmp_path / "c"
    meta = write_cohort_case(folder, 7)
    res = cohort.run([folder], ["Dmean", "D95%[%]", "Spleen:Dmax"], structures=["PTV", "Kidney_L"], workers=1)
    rows = {(r["structure"], r["metric"]): r for r in res.rows}
    assert set(rows) == {("PTV", "Dmean"), ("PTV", "D95%[%]"), ("Kidney_L", "Dmean"), ("Kidney_L", "D95%[%]"),
                         ("Spleen", "Dmax")}
    case = rtkit.load(folder)
    assert rows[("PTV", "Dmean")]["status"] == "ok"
    assert rows[("PTV", "Dmean")]["value"] == rtkit.dvh(case.dose, case.structures[meta["names"]["PTV"]]).mean
    assert rows[("PTV", "D95%[%]")]["status"] == "error" and "prescription" in rows[("PTV", "D95%[%]")]["error"]
    assert rows[("PTV", "D95%[%]")]["unit"] == "% Rx"
    for k in (("Kidney_L", "Dmean"), ("Spleen", "Dmax")):
        assert rows[k]["status"] == "missing" and math.isnan(rows[k]["value"]) and rows[k]["roi"] == ""
    # with a prescription, the % metric has a value: D95% / Rx
    rx = cohort.run([folder], ["PTV:D95%[%]"], prescription_gy=50.0, workers=1).rows[0]
    d95 = rtkit.dvh(case.dose, case.structures[meta["names"]["PTV"]])["D95%"]
    assert rx["status"] == "ok" and rx["value"] == pytest.approx(d95 / 50.0 * 100, rel=1e-12)


def test_bad_requests_fail_before_any_work(cohort_dir, tmp_path):
    root, _, _ = cohort_dir
    out = tmp_path / "t.csv"
    with pytest.raises(rtkit.MetricError, match="accepted forms"):
        cohort.run(root, ["PTV:D95"], out=out)
    with pytest.raises(rtkit.MetricError):
        cohort.run(root, [], out=out)
    with pytest.raises(cohort.CohortError, match="no such file"):
        cohort.run([root / "nope"], ["Dmean"], out=out)
    with pytest.raises(cohort.CohortError, match="workers"):
        cohort.run(root, ["Dmean"], workers=0, out=out)
    assert not out.exists()


def test_resume_refuses_other_metrics_and_resume_false_needs_overwrite(cohort_dir, tmp_path):
    root, _, _ = cohort_dir
    out = tmp_path / "t.csv"
    folders = [root / "case000", root / "case001"]
    cohort.run(folders, ["PTV:Dmean"], workers=1, out=out)
    before = out.read_bytes()
    with pytest.raises(cohort.CohortError, match="metrics"):
        cohort.run(folders, ["PTV:Dmax"], workers=1, out=out)
    with pytest.raises(rtkit.errors.OutputExistsError):
        cohort.run(folders, ["PTV:Dmax"], workers=1, out=out, resume=False)
    assert out.read_bytes() == before
    res = cohort.run(folders, ["PTV:Dmax"], workers=1, out=out, resume=False, overwrite=True)
    assert {r["metric"] for r in _csv_rows(out)} == {"Dmax"} and res.computed == 2
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(cohort.CohortError, match="not an rtkit cohort table"):
        cohort.run(folders, ["PTV:Dmax"], workers=1, out=tmp_path / "other.csv")


# ------------------------------------------------------------------ structure map
def test_structure_map_forms_regex_and_starter_map(tmp_path):
    m = cohort.StructureMap({"Lung_L": ["Lt Lung", "re:pulmo[ _]sin(ister)?"], "Herz": "Heart"})
    assert m.standard("LT_LUNG") == "Lung_L" and m.standard("lt  lung") == "Lung_L"
    assert m.standard("Pulmo Sinister") == "Lung_L" and m.standard("pulmo_sin") == "Lung_L"
    assert m.standard("pulmo sinister 2") == "pulmo sinister 2"  # a regex matches the whole name
    assert m.standard("HERZ") == "Heart"
    # the starter map: laterality spelled many ways, no false friends
    for local, std in [("Left Lung", "Lung_L"), ("lung_lt", "Lung_L"), ("R Lung", "Lung_R"), ("Lungs", "Lungs"),
                       ("spinal cord", "SpinalCord"), ("Rt Parotid", "Parotid_R"), ("BODY", "External"),
                       ("femoral head left", "Femur_Head_L")]:
        assert m.standard(local) == std, local
    for name in ("PTV", "GTV_1", "Lung", "Lungs"):
        assert m.standard(name) != "Lung_L"
    assert cohort.StructureMap(builtin=False).standard("Lt Lung") == "Lt Lung"
    # user entries come before the starter map
    assert cohort.StructureMap({"Lung_R": ["Lt Lung"]}).standard("Lt Lung") == "Lung_R"
    # files: JSON, and YAML when PyYAML is there
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"Heart": ["cuore"]}))
    assert cohort.StructureMap(f).standard("Cuore") == "Heart"
    yaml = pytest.importorskip("yaml")
    y = tmp_path / "map.yaml"
    y.write_text(yaml.safe_dump({"Heart": ["coeur"]}))
    assert cohort.StructureMap(y).standard("COEUR") == "Heart"


def test_structure_map_errors(tmp_path):
    with pytest.raises(cohort.StructureMapError, match="regular expression"):
        cohort.StructureMap({"Heart": ["re:(unclosed"]})
    with pytest.raises(cohort.StructureMapError, match="list of aliases"):
        cohort.StructureMap({"Heart": 3})
    with pytest.raises(cohort.StructureMapError, match="no such file"):
        cohort.StructureMap(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(cohort.StructureMapError, match="not valid JSON"):
        cohort.StructureMap(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(cohort.StructureMapError, match="mapping"):
        cohort.StructureMap(bad)


def test_two_rois_with_one_standard_name(tmp_path):
    m = cohort.StructureMap()
    found = m.resolve(["Lt Lung", "Lung_L", "Heart"])
    assert found == {"Lung_L": ["Lung_L", "Lt Lung"], "Heart": ["Heart"]}  # the standard spelling first


def test_metric_units():
    assert [cohort.metric_unit(m) for m in ("D95%", "D2cc[cGy]", "D95%[%]", "Dmean", "V20Gy", "V20Gy[%]", "V95%[cc]")] \
        == ["Gy", "cGy", "% Rx", "Gy", "cc", "% vol", "cc"]


# ------------------------------------------------------------------ command line
def test_cli_exit_codes(cohort_dir, reference, tmp_path, capsys):
    root, _, _ = cohort_dir
    ref, _ = reference
    mapfile = tmp_path / "map.json"
    mapfile.write_text(json.dumps(USER_MAP))
    good = [str(root / c) for c in ("case000", "case002")]
    out = tmp_path / "ok.csv"
    assert main(["cohort", *good, "--metrics", ",".join(METRICS), "--out", str(out),
                 "--structure-map", str(mapfile), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "2 case(s): 2 with results, 0 failed" in text and f"wrote {out}" in text
    assert [float(r["value"]) for r in _csv_rows(out)] == [r["value"] for r in ref.rows if r["case"] in ("case000", "case002")]
    bad = [*good, str(root / "broken_frame_mismatch")]
    assert main(["cohort", *bad, "--metrics", "PTV:Dmean", "--out", str(tmp_path / "b.csv"), "--workers", "1"]) == 1
    text = capsys.readouterr().out
    assert "1 failed" in text and "failed: broken_frame_mismatch: FrameOfReferenceError" in text
    for argv in (["--metrics", "PTV:D95"], ["--metrics", "Dmean", "--structure-map", str(tmp_path / "none.json")],
                 ["--metrics", "Dmean", "--workers", "0"]):
        assert main(["cohort", *good, "--out", str(tmp_path / "u.csv"), *argv]) == 2
        assert "rtkit cohort: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cohort", *good, "--metrics", "Dmean"])  # no --out
    assert e.value.code == 2


def test_cli_help_lists_cohort_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "rtkit cohort" in capsys.readouterr().out
    for sub in ("info", "dvh", "masks", "register", "gamma", "cohort"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0
        assert "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cohort", "--help"])
    text = capsys.readouterr().out
    for opt in ("--scheduler", "--workers", "--structure-map", "--out", "exit codes"):
        assert opt in text


def test_standard_names_table_is_used_for_names_needing_the_map(reference, cohort_dir):
    _, info, _ = cohort_dir
    res, _ = reference
    for r in res.rows:
        assert r["structure"] in NAMES, r
        assert r["roi"] == info[r["case"]]["names"][r["structure"]]
