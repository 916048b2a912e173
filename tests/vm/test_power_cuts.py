"""Real power cuts: qemu killed at random moments while the queue is busy (tests/vm/powercut.py).

The seed is printed; ``MINIQ_POWERCUT_SEED=S`` replays a run and
``MINIQ_POWERCUT_CUTS=N`` sets how many cuts (CI: 20).  See powercut.py for
the disk model and every invariant checked.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .image import Image
from .powercut import PowerCuts

pytestmark = pytest.mark.vm


@pytest.mark.timeout(3600)
def test_nothing_is_lost_or_run_twice_across_power_cuts(image: Image, deb: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("MINIQ_POWERCUT_SEED") or random.SystemRandom().randrange(2**31))
    cuts = int(os.environ.get("MINIQ_POWERCUT_CUTS") or 20)
    print(f"\npower cuts: seed {seed} (replay with MINIQ_POWERCUT_SEED={seed})")
    figures = PowerCuts(image, deb, tmp_path / "powercut", seed).run(cuts)
    from conftest import REPORT

    REPORT.append(
        f"power cuts (seed {seed}): {len(figures['cuts'])} cuts after {min(figures['cuts'])}-{max(figures['cuts'])} s of work; "
        f"{figures['enqueued']} jobs acknowledged, {figures['jobs']} recorded, {figures['runs']} runs = marks for "
        f"{figures['attempts']} attempts ({figures['interrupted without a mark']} interrupted before their first instruction); "
        f"drained in {figures['drain seconds']} s; {figures['checks']} checks; boots {min(figures['boots'])}-{max(figures['boots'])} s"
    )
    print(REPORT[-1])
    assert figures["enqueued"] > 0 and figures["runs"] > 0
