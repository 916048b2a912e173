"""root with system units, installed as README.md says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testbed.sandbox import Sandbox

from .common import *  # noqa: F403 - the shared checks run for this installation
from .flows import Flow
from .operate_checks import *  # noqa: F403
from .scope_checks import *  # noqa: F403


@pytest.fixture(scope="module")
def flow(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    out = f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    assert f"miniq is installed and its units are enabled; your queue is {f.root}." in out
    assert f.unit_state("miniq-process.path") == "active"
    yield f
