"""Which files a root processor trusts (users.py), on real files and links.

The shared-server tests (tests/integration/test_shared_server.py) run the
same rule through a real root processor; these walk its corners directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from miniq.core.users import untrusted_reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="files owned by root need root (CI runs as root)")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root-owned tree, 0755 all the way down from tmp_path (itself 0700)."""
    top = tmp_path / "top"
    (top / "jobs").mkdir(parents=True)
    (top / "other").mkdir()
    job = top / "jobs" / "t.job"
    job.write_text("#!/bin/sh\n")
    job.chmod(0o755)
    (top / "other" / "real.job").write_text("#!/bin/sh\n")
    (top / "other" / "real.job").chmod(0o755)
    for d in (top, top / "jobs", top / "other"):
        d.chmod(0o755)
    return top


def test_a_root_owned_file_in_root_owned_directories_is_trusted(tree: Path) -> None:
    assert untrusted_reason(tree / "jobs" / "t.job") is None
    assert untrusted_reason(str(tree / "jobs" / "t.job")) is None


def test_a_group_writable_file_is_not_trusted(tree: Path) -> None:
    (tree / "jobs" / "t.job").chmod(0o775)
    assert untrusted_reason(tree / "jobs" / "t.job") == f"{tree}/jobs/t.job is writable by group"


def test_a_directory_above_writable_by_others_is_named(tree: Path) -> None:
    (tree / "jobs").chmod(0o757)
    assert untrusted_reason(tree / "jobs" / "t.job") == f"{tree}/jobs is writable by others"


def test_a_sticky_directory_above_is_allowed_but_not_as_the_path_itself(tree: Path) -> None:
    (tree / "jobs").chmod(0o1777)
    assert untrusted_reason(tree / "jobs" / "t.job") is None
    assert untrusted_reason(tree / "jobs") == f"{tree}/jobs is writable by group"


def test_a_file_owned_by_another_user_is_not_trusted(tree: Path) -> None:
    os.chown(tree / "jobs" / "t.job", 65534, 65534)
    assert untrusted_reason(tree / "jobs" / "t.job") == f"{tree}/jobs/t.job is owned by uid 65534, not root"


def test_a_relative_link_is_followed_and_its_target_checked(tree: Path) -> None:
    link = tree / "jobs" / "link.job"
    link.symlink_to("../other/real.job")
    assert untrusted_reason(link) is None
    (tree / "other").chmod(0o777)
    assert untrusted_reason(link) == f"{tree}/other is writable by group"


def test_a_link_into_a_missing_place_and_a_link_loop_are_not_trusted(tree: Path) -> None:
    missing = tree / "jobs" / "missing.job"
    missing.symlink_to(tree / "nowhere" / "x.job")
    assert untrusted_reason(missing) == f"{tree}/nowhere/x.job does not exist"
    loop = tree / "jobs" / "loop.job"
    loop.symlink_to("loop.job")
    assert untrusted_reason(loop) == f"{loop} has too many levels of symbolic links"
