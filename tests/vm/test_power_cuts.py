"""Real power cuts, and every flush point of a recorded run (tests/vm/powercut.py, dmlog.py).

The seed is printed; ``MINIQ_POWERCUT_SEED=S`` replays a run and
``MINIQ_POWERCUT_CUTS=N`` sets how many cuts (default 20).  No cut starts
once the cuts took ``MINIQ_POWERCUT_BUDGET`` seconds (default 600) and number
at least 12: the guest is emulated, and on a busy host its boots take two to
three times longer; CI's whole run has a deadline.  The report says how many
cuts ran.  See powercut.py for the disk model and every invariant checked,
dmlog.py for the write log.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from .image import Image
from .powercut import PowerCuts

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def power(image: Image, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerCuts]:
    seed = int(os.environ.get("MINIQ_POWERCUT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"\npower cuts: seed {seed} (replay with MINIQ_POWERCUT_SEED={seed})")
    cuts = PowerCuts(image, deb, tmp_path_factory.mktemp("powercut"), seed)
    cuts.prepare()
    yield cuts


@pytest.mark.timeout(3600)
def test_nothing_is_lost_or_run_twice_across_power_cuts(power: PowerCuts) -> None:
    asked = int(os.environ.get("MINIQ_POWERCUT_CUTS") or 20)
    figures = power.run(asked, budget=float(os.environ.get("MINIQ_POWERCUT_BUDGET") or 600), at_least=min(asked, 12))
    from conftest import REPORT

    REPORT.append(
        f"power cuts (seed {power.seed}): {len(figures['cuts'])} of {asked} cuts "
        f"after {min(figures['cuts'])}-{max(figures['cuts'])} s of work; "
        f"{figures['enqueued']} jobs acknowledged, {figures['jobs']} recorded, {figures['done as their kind calls for']} done as "
        f"their kind calls for ({figures['flaky within its retries']} flaky within their retries, "
        f"{figures['after jobs after their parent']} after their parent); {figures['runs']} runs = marks for "
        f"{figures['attempts']} attempts; {figures['interrupted by a cut']} interrupted, all by a cut, of at most "
        f"{figures['bound: cuts x parallel']} (cuts x parallel), {figures['interrupted without a mark']} before their first instruction; "
        f"drained in {figures['drain seconds']} s; {figures['checks']} checks; boots {min(figures['boots'])}-{max(figures['boots'])} s; "
        f"{figures['kernel hangs']} boots given up with the kernel hung before /init"
    )
    print(REPORT[-1])
    assert len(figures["cuts"]) >= min(asked, 12)
    assert figures["enqueued"] > 0 and figures["runs"] > 0


@pytest.mark.timeout(3600)
def test_every_flush_point_of_a_recorded_run_holds(power: PowerCuts) -> None:
    from conftest import REPORT

    from .dmlog import WriteLog

    figures = WriteLog(power).run(seconds=10.0)
    recovered = "; ".join(
        f"point {r['point']}: {r['acknowledged']} acknowledged, {r['done as their kind calls for']} done, "
        f"{r['interrupted by a cut']} interrupted (at most {r['bound: cuts x parallel']}), "
        f"{r.get('interrupted by an orderly stop', 0)} stopped by the recorded run's stop, drained in {r['drain_seconds']} s"
        for r in figures["recovered"]
    )
    REPORT.append(
        f"write log (dm-log-writes, seed {power.seed}): {figures['entries']} entries, {figures['points']} flush points checked "
        f"in {figures['replay_seconds']} s; {figures['jobs']} jobs acknowledged, {figures['records']} records; "
        f"recovered and drained from {len(figures['recovered'])} flush points: {recovered}"
    )
    print(REPORT[-1])
    assert figures["points"] > 0 and figures["jobs"] > 0 and len(figures["recovered"]) == 3


@pytest.mark.timeout(1800)
def test_what_a_reboot_leaves_runs_by_the_timer_alone_and_an_idle_queue_costs_nothing(power: PowerCuts) -> None:
    from conftest import REPORT

    from .powercut import after_boot

    figures = after_boot(power)
    REPORT.append(f"after a power cut, the timer alone ran what the cut left: {figures}")
    print(REPORT[-1])
