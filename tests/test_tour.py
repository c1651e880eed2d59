"""The tour of docs/usage.md, run block after block in one namespace, so the docs stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_usage_has_the_tour():
    blocks = python_blocks(USAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    joined = "\n".join(blocks)
    for needle in ("fastmlp.fit(", ".save(", "fastmlp.load(", "use_backend(", "plot_history("):
        assert needle in joined


def test_tour_runs(capsys):
    pytest.importorskip("matplotlib")
    namespace: dict = {"__name__": "tour"}
    for i, block in enumerate(python_blocks(USAGE.read_text(encoding="utf-8"))):
        try:
            exec(compile(block, f"{USAGE.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # name the failing block
            raise AssertionError(f"docs/usage.md python block {i} failed: {exc!r}\n{block}") from exc
    out = capsys.readouterr().out
    assert "test accuracy" in out and "misclassified" in out
