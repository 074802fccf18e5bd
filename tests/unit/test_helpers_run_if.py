"""tests/helpers/run_if.py: a missing requirement skips with a reason that says what is missing and how to get it, a
present one does not skip, and a CUDA requirement carries the ``gpu`` tier marker."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.run_if import RunIfMarks, run_if

pytest_plugins = ["pytester"]

MISSING = "no_such_module_hf_lightning_xyz"


def test_a_missing_module_skips_with_a_reason_that_says_how_to_get_it() -> None:
    marks = run_if(module=MISSING)
    assert isinstance(marks, RunIfMarks) and [m.name for m in marks] == ["skipif"]
    assert marks.skips
    assert f"`{MISSING}`" in marks.reason and "scripts/install.sh --dev" in marks.reason


@pytest.mark.parametrize("name", ["json", "os.path"])
def test_a_present_module_does_not_skip(name: str) -> None:
    marks = run_if(module=name)
    assert not marks.skips and marks.reason == "has everything it needs here"
    assert run_if().skips is False  # nothing asked, nothing missing


def test_a_missing_parent_package_is_missing_not_an_error() -> None:
    assert run_if(module=f"{MISSING}.sub").skips


@pytest.mark.parametrize("kwargs", [{"cuda": True}, {"min_cuda_gpus": 1}, {"bf16_cuda": True}],
                         ids=lambda kwargs: next(iter(kwargs)))
def test_cuda_requirements_carry_the_gpu_marker(kwargs: dict) -> None:
    marks = run_if(**kwargs)
    assert [m.name for m in marks] == ["skipif", "gpu"]
    if not torch.cuda.is_available():
        assert marks.skips and "needs 1 CUDA GPU, 0 visible here" in marks.reason and "-m gpu" in marks.reason
    elif "bf16_cuda" not in kwargs:
        assert not marks.skips


def test_more_gpus_than_there_are_skips() -> None:
    marks = run_if(min_cuda_gpus=torch.cuda.device_count() + 2)
    assert marks.skips and f"needs {torch.cuda.device_count() + 2} CUDA GPUs" in marks.reason


def test_several_missing_requirements_are_all_named() -> None:
    marks = run_if(module=MISSING, min_cuda_gpus=torch.cuda.device_count() + 2)
    assert marks.skips and MISSING in marks.reason and "CUDA GPUs" in marks.reason


def test_the_marks_skip_and_run_in_a_real_session(pytester: pytest.Pytester) -> None:
    """As a decorator, as ``pytestmark`` and in ``pytest.param(marks=...)``: a test that lacks its module is reported
    skipped with the reason, one that has it runs."""
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    gpu: needs CUDA\n")
    pytester.makepyfile(test_inner=f"""
        import pytest
        from tests.helpers.run_if import run_if

        @run_if(module="{MISSING}")
        def test_lacks():
            raise AssertionError("must not run")

        @run_if(module="json")
        def test_has():
            pass

        @pytest.mark.parametrize("x", [pytest.param(1, marks=run_if(module="{MISSING}")), 2])
        def test_param(x):
            assert x == 2

        class TestModuleLevel:
            pytestmark = run_if(module="{MISSING}")

            def test_in_class(self):
                raise AssertionError("must not run")
    """)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=3)
    result.stdout.fnmatch_lines([f"SKIPPED*needs the Python module `{MISSING}`, not installed here*"])
