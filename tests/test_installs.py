"""One TensorFlow: the keras extra, the test extras and CI's environment never hold both builds.

Why: `tensorflow` and `tensorflow-cpu` are two distributions of one package that write the same
files; installing both costs 570 MB more and leaves whichever came last. The keras extra used to
list tf-keras, which requires the full `tensorflow`, beside tensorflow-cpu.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
TF_BUILDS = {"tensorflow", "tensorflow-cpu"}


def _ci_extras() -> list[str]:
    """The extras .ci/run installs (its ``-e ".[dev,keras,...]"``)."""
    m = re.search(r'-e "\.\[([a-z,]+)\]"', (ROOT / ".ci" / "run").read_text())
    assert m, ".ci/run no longer installs the project with its extras"
    return m.group(1).split(",")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _applies(req: Requirement, env: dict[str, str], extras: tuple[str, ...] = ("",)) -> bool:
    return req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras)


PLATFORMS = {  # (sys_platform, platform_machine) -> the TensorFlow build that has wheels there
    ("linux", "x86_64"): "tensorflow-cpu",
    ("win32", "AMD64"): "tensorflow-cpu",
    ("darwin", "arm64"): "tensorflow",
    ("darwin", "x86_64"): "tensorflow",
    ("linux", "aarch64"): "tensorflow",
}


@pytest.mark.parametrize("platform", list(PLATFORMS), ids=["-".join(p) for p in PLATFORMS])
def test_keras_extra_names_one_tensorflow_per_platform(platform):
    env = {**default_environment(), "sys_platform": platform[0], "platform_machine": platform[1]}
    reqs = [Requirement(r) for r in _project()["optional-dependencies"]["keras"]]
    tf = [canonicalize_name(r.name) for r in reqs if canonicalize_name(r.name) in TF_BUILDS and _applies(r, env)]
    assert tf == [PLATFORMS[platform]]


def test_no_extra_lists_tf_keras():
    # tf-keras requires the full `tensorflow`: in an extra it installs a second TensorFlow
    for extra, reqs in _project()["optional-dependencies"].items():
        assert "tf-keras" not in {canonicalize_name(Requirement(r).name) for r in reqs}, extra


def _closure(roots: list[Requirement]) -> set[str]:
    """Names of the installed distributions that ``roots`` pull in (markers evaluated here)."""
    env = default_environment()
    seen: set[str] = set()
    todo = [(r, ("",)) for r in roots if _applies(r, env)]
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        extras = ("", *sorted(req.extras))
        todo += [(Requirement(r), ()) for r in requires if _applies(Requirement(r), env, extras)]
    return seen


def test_test_extras_pull_in_one_tensorflow():
    project = _project()
    roots = [Requirement(r) for r in project["dependencies"]]
    roots += [Requirement(r) for e in _ci_extras() for r in project["optional-dependencies"][e]]
    found = _closure(roots) & TF_BUILDS
    assert len(found) == 1, f"the test extras require {sorted(found)}"


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="a user's machine may hold any mix; CI's must not")
def test_ci_has_one_tensorflow_installed():
    installed = set()
    for name in TF_BUILDS:
        try:
            metadata.distribution(name)
            installed.add(name)
        except metadata.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"installed: {sorted(installed)} (see .ci/run)"
