"""miniq.conf: sections, validation, and the merge order of limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from miniq.core.errors import BadInput
from miniq.core.limits import Limits
from miniq.store.config import Config


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "miniq.conf").write_text(text)
    return root


def test_limits_merge_most_specific_first(tmp_path: Path) -> None:
    conf = Config.load(
        write(
            tmp_path,
            "[limits]\ntimeout = 1h\nmemory-max = 1G\n[group:lab]\nmemory-max = 2G\ntasks-max = 50\n"
            "[user:alice]\ntasks-max = 10\nmax-queued = 5\n[job:big]\nmemory-max = 8G\n"
            "[processor]\nparallel = 3\nlease = 30s\nmax-interruptions = 2\nlinger = 0\noutput-rate-limit = off\n"
            "[access]\ngroup = lab\nmax-queued = 100\n",
        )
    )
    assert conf.limits_for("small", "bob") == Limits(memory_max=1024**3, timeout=3600.0)
    assert conf.limits_for("small", "alice", ("lab",)) == Limits(memory_max=2 * 1024**3, tasks_max=10, timeout=3600.0)
    assert conf.limits_for("big", "alice", ("lab",)).memory_max == 8 * 1024**3
    assert (conf.parallel, conf.lease, conf.max_interruptions, conf.linger, conf.output_rate_limit) == (3, 30.0, 2, 0.0, None)
    assert (conf.access_group, conf.cap_for("alice"), conf.cap_for("bob")) == ("lab", 5, 100)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[processor]\nparallel = 0\n", "invalid parallelism '0' in [processor]"),
        ("[processor]\nspeed = 2\n", "unknown option 'speed' in [processor]"),
        ("[processor]\noutput-rate-limit = lots\n", "invalid output-rate-limit 'lots' in [processor]"),
        ("[nonsense]\n", "unknown section [nonsense]"),
        ("[limits]\nmemory = 1G\n", "unknown limit 'memory' in [limits]"),
        ("[access]\nwho = all\n", "unknown option 'who' in [access]"),
        ("not ini", "cannot read"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        Config.load(write(tmp_path, text))


def test_a_conf_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "miniq.conf").mkdir()
    with pytest.raises(BadInput, match="it is a directory, not a regular file"):
        Config.load(tmp_path)
    assert Config.load(tmp_path / "nowhere") == Config()
