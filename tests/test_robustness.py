"""One bad entry never stops the queue, and nothing of a link's target leaks.

Every kind of planted entry (tests/planted.py) in queue/, delayed/ and
running/, followed by a good job: the good job runs, the processor finishes
normally, the entry is recorded as rejected with its reason, and no byte of
a link's target appears anywhere under the root.  The same runs against real
systemd in tests/integration/robustness_checks.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import process
from planted import PLANTS, Plant, leaked, plant_name

from miniq.job import new_id
from miniq.queue import Queue


@pytest.mark.parametrize("where", ["queue", "delayed", "running"])
@pytest.mark.parametrize("plant", PLANTS, ids=[p.kind for p in PLANTS])
def test_a_planted_entry_is_rejected_and_the_good_job_runs(root: Path, tmp_path: Path, plant: Plant, where: str) -> None:
    q = Queue(root)
    q.ensure_layout()
    outside = tmp_path / "outside"
    outside.mkdir()
    bad_id = new_id()
    plant.make(root / where / plant_name(where, bad_id), outside, lambda p: p)
    good = q.enqueue("echo", ["good"])
    sink, summary = process(root)
    assert summary.succeeded == [good.id]
    assert sorted(os.listdir(root / "queue")) == [] and os.listdir(root / where) == []
    records = [json.loads(p.read_text()) for p in (root / "failed").iterdir()]
    assert len(records) == 1, records
    assert records[0]["result"]["outcome"] == "rejected" and records[0]["result"]["reason"].startswith("unusable job file: ")
    assert leaked(root) == []
