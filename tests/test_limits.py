from pathlib import Path

import pytest

from miniq.core.errors import BadInput
from miniq.core.limits import LIMITS, Limits, parse_percent, parse_size
from miniq.core.timeparse import parse_duration


@pytest.mark.parametrize(
    "text,value",
    [("512M", 512 * 1024**2), ("1G", 1024**3), ("1.5G", int(1.5 * 1024**3)), ("65536", 65536), ("64k", 65536), ("2GiB", 2 * 1024**3)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text,value", [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), ("1.5h", 5400)]
)
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "abc", "10x", "m", "-5s", "0s", "10m x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput, match="invalid duration"):
        parse_duration(text)


def test_percent() -> None:
    assert parse_percent("50%") == 50
    assert parse_percent("200") == 200
    with pytest.raises(BadInput, match="invalid CPU quota '0%'"):
        parse_percent("0%")


def test_parse_and_merge() -> None:
    job = Limits.parse({"memory-max": "64M", "timeout": None})
    conf = Limits.parse({"memory-max": "1G", "timeout": "10m", "tasks-max": "32"})
    merged = job.over(conf)
    assert merged == Limits(memory_max=64 * 1024**2, timeout=600.0, tasks_max=32)
    assert Limits.from_json(merged.to_json()) == merged


def test_unknown_limit_names_the_known_ones() -> None:
    with pytest.raises(BadInput, match="unknown limit 'memory' in x: expected one of memory-max, cpu-quota"):
        Limits.parse({"memory": "1G"}, " in x")


def test_every_limit_becomes_its_scope_property() -> None:
    limits = Limits(memory_max=64 * 1024**2, cpu_quota=50, tasks_max=16, timeout=2.5, nice=5)
    assert limits.properties() == [
        (b"MemoryMax", b"t", 64 * 1024**2),
        (b"CPUQuotaPerSecUSec", b"t", 500_000),
        (b"TasksMax", b"t", 16),
        (b"TimeoutStopUSec", b"t", 10_000_000),  # SIGKILL 10 s after SIGTERM, systemd's default
        (b"RuntimeMaxUSec", b"t", 42_500_000),  # miniq stops it at 2.5 s; systemd after 2.5 + 10 + 30 s, a backstop
    ]
    assert Limits(timeout=60.0, stop_timeout=1.0).properties()[-2:] == [(b"TimeoutStopUSec", b"t", 1_000_000),
                                                                          (b"RuntimeMaxUSec", b"t", 91_000_000)]  # fmt: skip
    assert [spec.key for spec in LIMITS] == ["memory-max", "cpu-quota", "tasks-max", "timeout", "stop-timeout", "nice"]


def test_a_time_limit_is_sigterm_then_sigkill_after_the_stop_timeout(root: Path) -> None:
    """miniq enforces --timeout itself (worker.py): SIGTERM, then SIGKILL
    --stop-timeout later, so the scope outlives the job until it is accounted."""
    from helpers import process, result_of, write_job

    from miniq.store.queue import Queue

    write_job(root, "stubborn", "#!/bin/sh\ntrap '' TERM\nsleep 30 &\nwait; wait\n")
    write_job(root, "polite", "#!/bin/sh\nexec sleep 30\n")
    q = Queue(root)
    stubborn = q.enqueue("stubborn", [], Limits(timeout=0.5, stop_timeout=0.5)).id
    polite = q.enqueue("polite", [], Limits(timeout=0.5)).id
    sink, _ = process(root)
    first, second = result_of(root, stubborn), result_of(root, polite)
    assert (first["outcome"], first["signal"]) == ("timeout", "SIGKILL"), first
    assert (second["outcome"], second["signal"]) == ("timeout", "SIGTERM"), second
    assert first["duration"] < 15 and second["duration"] < 15  # far from their 30 s: the limit ended them
    assert f"job {stubborn} (stubborn) still runs 0.5 s after SIGTERM: SIGKILL" in sink.text()
    assert "max_rss" not in first  # the processor's own peak, carried over by the kernel: not the job's (NEWS)
