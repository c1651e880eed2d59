"""The documentation stays true: every ```python block of README.md and docs/*.md runs as
written, block after block in one namespace per file; docs/usage.md holds the tour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USAGE = ROOT / "docs" / "usage.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def run_blocks(path: Path) -> None:
    namespace: dict = {"__name__": path.stem}
    for i, block in enumerate(python_blocks(path)):
        try:
            exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # name the failing block
            raise AssertionError(f"{path.name} python block {i} failed: {exc!r}\n{block}") from exc


@pytest.mark.parametrize("path", [d for d in DOCS if python_blocks(d)], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch, capsys):
    if path == USAGE:
        pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    run_blocks(path)
    if path == USAGE:
        out = capsys.readouterr().out
        assert "test accuracy" in out and "misclassified" in out


def test_usage_has_the_tour():
    joined = "\n".join(python_blocks(USAGE))
    assert len(python_blocks(USAGE)) >= 6
    for needle in ("fastmlp.fit(", ".save(", "fastmlp.load(", "use_backend(", "plot_history("):
        assert needle in joined
