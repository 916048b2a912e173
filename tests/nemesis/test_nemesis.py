"""A short seeded nemesis round in CI (harness.py says what it does and checks).

``MINIQ_NEMESIS_SEED=S`` replays a round; ``MINIQ_NEMESIS_SECONDS=N`` sets its
length (CI: 120 s of faults); ``python -m tests.nemesis`` runs one as long as asked.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.nemesis


@pytest.mark.timeout(1800)
def test_a_nemesis_round_loses_and_doubles_nothing(wheelhouse: Path, tmp_path: Path) -> None:
    from conftest import REPORT, require_testbed

    from .harness import Nemesis

    require_testbed()
    seed = int(os.environ.get("MINIQ_NEMESIS_SEED") or random.SystemRandom().randrange(2**31))
    print(f"\nnemesis: seed {seed} (replay with MINIQ_NEMESIS_SEED={seed})")
    figures = Nemesis(tmp_path / "nemesis", wheelhouse, seed).run(float(os.environ.get("MINIQ_NEMESIS_SECONDS") or 120))
    REPORT.append(f"nemesis (seed {seed}): {figures}")
    print(REPORT[-1])
    assert figures["faults"] >= 8 and figures["jobs"] > 0 and figures["runs"] > 0
