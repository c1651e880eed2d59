"""Where the real data of ``../shared/data`` lives; tests needing it skip when it is absent.

(A helper module rather than conftest.py fixtures, so it merges without touching a shared file.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """``../shared/data/<parts>``, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared/data sits beside the repository in CI)")
    return path
