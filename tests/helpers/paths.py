"""Where the tests find the project, its golden files and the shared fixtures beside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
VENV_BIN = REPO / "environments" / "main" / "bin"
# Real data in external formats (Holmes datasets, the Holmes leaderboard); tests may read it,
# the project never needs it.
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
FLASH_HOLMES = SHARED_FIXTURES / "holmes" / "flash-holmes"
