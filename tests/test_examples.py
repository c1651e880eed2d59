"""Every example script runs (``--quick``: a seconds-long run) and writes its figure."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from helpers import shared_data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_course_experiment_has_a_script():
    for name in ("course_run1_sigmoid_mse.py", "course_run2_softmax_ce.py", "course_run3_from_scratch.py",
                 "course_run4_adam.py", "xor_linear_vs_relu.py", "zero_init.py", "universal_approximation.py",
                 "capacity_sweep.py", "dead_relu.py"):
        assert name in SCRIPTS


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_quick(script, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    if script == "course_run5_custom_loader.py":

        shared_data("stat453-L09-custom-dataloader")
        pytest.importorskip("PIL")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [script, "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, f"{script} wrote no figure"
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "wrote" in capsys.readouterr().out
