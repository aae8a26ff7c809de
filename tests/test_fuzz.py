"""Fuzzing rtkit's readers (issue 10): mutated valid objects never raise anything but RTKitError.

The targets, mutations and usability checks live in tests/fuzzing.py (shared
with benchmarks/fuzz_readers.py, which runs 10,000+ cases outside CI).  Here a
few hundred seeded cases run in CI, in lenient and strict mode.
"""

from __future__ import annotations

import pytest
from fuzzing import TARGETS, mutations, run_case
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

_SETTINGS = settings(max_examples=80, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutated_objects_raise_only_rtkit_errors(target, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"fuzz-{target}")
    outcomes = []

    @seed(20261204)
    @_SETTINGS
    @given(ops=mutations(target), strict=st.booleans(), which=st.integers(0, 2))
    def case(ops, strict, which):
        out = run_case(target, ops, strict, work, which)
        if out is not None:
            outcomes.append(out)

    case()
    # the mutations must exercise both sides of the contract, or the test proves nothing
    assert outcomes, f"{target}: no mutation could be written"
    assert any(o.status == "error" for o in outcomes), f"{target}: no mutation was rejected"
    assert any(o.status == "ok" for o in outcomes), f"{target}: no mutation was read"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_unmutated_objects_read(target, tmp_path):
    # a no-op mutation (flip nothing: truncate at the full length is impossible, so delete a
    # keyword the object does not have) reads in both modes
    for strict in (False, True):
        out = run_case(target, [("delete", "", "PatientComments", "")], strict, tmp_path / str(strict))
        assert out is not None and out.status == "ok", (target, strict, out)


# Defects the fuzzer found, kept as regression tests (each escaped as a non-rtkit exception).
_FOUND = [
    # a flipped byte turns a VR into "QN": pydicom raises NotImplementedError on first access
    ("rtdose", [("bytes", "flip", 1048574, 0), ("set", "", "PixelSpacing", "1e308")], "error"),
    # an IS of "inf": int(float("inf")) raised OverflowError
    ("rtdose", [("delete", "", "ImagePositionPatient", ""), ("set", "", "Rows", "inf")], "error"),
    ("rtplan", [("set", "BeamSequence", "BeamNumber", ("inf", 0))], None),
]


@pytest.mark.parametrize(("target", "ops", "status"), _FOUND)
@pytest.mark.parametrize("strict", [False, True])
def test_fuzzer_findings_stay_fixed(target, ops, status, strict, tmp_path):
    out = run_case(target, ops, strict, tmp_path)
    assert out is not None
    if status is not None:
        assert out.status == status, out


def test_huge_number_of_frames_is_an_error_not_a_memory_blowup(tmp_path):
    # found by the 20,000-case run: NumberOfFrames = 4294967296 on a CT slice built a list of
    # 4e9 frame geometries (24 GB, killed by the OOM killer)
    for strict in (False, True):
        out = run_case("ct", [("set", "", "NumberOfFrames", "4294967296")], strict, tmp_path / str(strict))
        assert out is not None and out.status == "error", out
