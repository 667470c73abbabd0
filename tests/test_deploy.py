"""What production runs: the files `scripts/deploy.sh` uploads, what the SDK's requirements check says about
them, what Fivetran's install of requirements.txt does, the Python it runs on, and the versions a sync names.

The deploy path runs as README gives it, up to the upload: `scripts/deploy.sh --dry-run` builds the staging
folder and runs `fivetran package` on it, which is the requirements check and the packaging `fivetran deploy`
runs before it uploads. The check runs pipreqs, which asks PyPI about every import it cannot match to an
installed distribution; without network that fails and the SDK skips the check (after 12 s of retries), so
the offline tests run pipreqs in its local mode (`--use-local`) through a `pipreqs` placed first on PATH.

Tests marked `pypi` ask PyPI (scripts/setup.sh needs it anyway; CI has it): deselect with `-m "not pypi"`.
"""

import ast
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest

import connector
from tests.syncing import VENV_BIN, pipreqs_shim

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "scripts" / "deploy.sh"
REQUIREMENTS = REPO / "requirements.txt"
PIP = (sys.executable, "-m", "pip")
DEPLOY_PYTHON = re.search(r"^DEPLOY_PYTHON=(\S+)$", DEPLOY.read_text(), re.MULTILINE).group(1)


class DryRun(NamedTuple):
    folder: Path  # where deploy.sh was called from
    output: str
    returncode: int

    def line(self, label: str) -> str:
        return re.search(rf"^{label}: (.*)$", self.output, re.MULTILINE).group(1)

    @property
    def package(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.line("package"))

    @property
    def removable(self) -> set[str]:
        """What the SDK's check said to remove from requirements.txt."""
        found = re.search(r"Remove them from requirements\.txt:\n(.*)", self.output)
        return set(found.group(1).split()) if found else set()


def dry_run(folder: Path, pipreqs_options: str, *options: str) -> DryRun:
    """README's deploy command with --dry-run, called from `folder` (which holds configuration.json)."""
    (folder / "bin").mkdir()
    tools = pipreqs_shim(folder / "bin", pipreqs_options)
    (folder / "configuration.json").write_text("{}")
    completed = subprocess.run(
        [str(DEPLOY), "--dry-run", *options, "--configuration", "configuration.json"],
        cwd=folder,
        env={
            **os.environ,
            "DO_NOT_TRACK": "1",
            "TMPDIR": str(folder),
            "PATH": f"{tools}:{VENV_BIN}:{os.environ['PATH']}",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return DryRun(folder, completed.stdout + completed.stderr, completed.returncode)


README_OPTIONS = ("--api-key", "not-a-real-key", "--destination", "warehouse", "--connection", "ravendb_orders")


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    run = dry_run(tmp_path_factory.mktemp("offline"), "--use-local", "--non-interactive", *README_OPTIONS)
    assert run.returncode == 0, run.output
    return run


def test_the_package_holds_exactly_the_connector_and_its_requirements(offline):
    with offline.package as package:
        names = sorted(package.namelist())
        files = {name: package.read(name) for name in ("connector.py", "requirements.txt")}

    assert names == ["configuration_form.pb", "connector.py", "requirements.txt"]
    assert files == {name: (REPO / name).read_bytes() for name in files}


def test_the_deploy_command_passes_the_options_through_with_the_chosen_python(offline):
    staging = offline.line("staging folder")

    assert offline.line("would run") == (
        f"fivetran deploy {staging} --non-interactive --api-key ******** --destination warehouse "
        f"--connection ravendb_orders --configuration {offline.folder / 'configuration.json'} "
        f"--python-version {DEPLOY_PYTHON}"
    )
    assert "not-a-real-key" not in offline.output


def test_the_sdk_requirements_check_ran_and_asks_to_add_or_change_nothing(offline):
    assert "pipreqs failed" not in offline.output
    assert "skipping requirements.txt validation" not in offline.output
    assert "Include the following dependency libraries" not in offline.output
    assert "We recommend using the current stable version" not in offline.output


def test_offline_the_check_would_remove_only_cryptography_which_local_mode_cannot_see(offline):
    imported = {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse((REPO / "connector.py").read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }

    assert offline.removable == {"cryptography"}
    assert "cryptography" in imported  # the connector needs it: certificates are read with it
    # pipreqs' local mode knows a distribution by its top_level.txt, which cryptography's wheel does not ship
    assert importlib.metadata.distribution("cryptography").read_text("top_level.txt") is None


@pytest.mark.e2e
@pytest.mark.pypi
def test_online_the_check_adds_and_removes_nothing_and_suggests_only_the_newest_cryptography(tmp_path):
    # pipreqs' default server is pypi.python.org, PyPI's old name, which redirects to pypi.org: ask it directly
    run = dry_run(tmp_path, "--pypi-server https://pypi.org/pypi/", "--non-interactive", *README_OPTIONS)

    assert run.returncode == 0, run.output
    assert "pipreqs failed" not in run.output
    assert "Include the following dependency libraries" not in run.output
    assert run.removable == set()
    suggested = re.search(r"current stable version for the following libraries:\n(\{.*\})", run.output).group(1)
    assert list(ast.literal_eval(suggested)) == ["cryptography"]
    with run.package as package:
        assert package.read("requirements.txt") == (REPO / "requirements.txt").read_bytes()


@pytest.mark.e2e
@pytest.mark.pypi
def test_a_plain_pip_install_of_requirements_beside_the_sdk_replaces_its_requests_and_succeeds(tmp_path):
    sdk_requests = next(
        requirement
        for requirement in importlib.metadata.requires("fivetran-connector-sdk")
        if requirement.startswith("requests")
    )
    report = tmp_path / "report.json"

    # --dry-run: pip resolves and reports what it would install into this environment, and changes nothing
    completed = subprocess.run(
        [*PIP, "install", "--dry-run", "--quiet", "--report", str(report), "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert sdk_requests == f"requests=={importlib.metadata.version('requests')}"  # the SDK's pin is installed
    installs = {
        item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]
    }
    assert list(installs) == ["requests"]
    assert installs["requests"].startswith("2.32.")


WHEELS = [
    pytest.param(python, machine, python in ("3.10", "3.11", "3.12"), id=f"{python}-{machine}")
    for python in ("3.10", "3.11", "3.12", "3.13", "3.14")
    for machine in ("x86_64", "aarch64")
]


@pytest.mark.e2e
@pytest.mark.pypi
@pytest.mark.parametrize(("python", "machine", "from_wheels"), WHEELS)
def test_which_pythons_install_every_dependency_from_wheels(tmp_path, python, machine, from_wheels):
    platform_options = ("--python-version", python, "--platform", f"manylinux2014_{machine}")
    completed = subprocess.run(
        [
            *PIP,
            "download",
            "--quiet",
            "--only-binary=:all:",
            *platform_options,
            "-d",
            str(tmp_path),
            "-r",
            str(REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (completed.returncode == 0) == from_wheels, completed.stderr
    if not from_wheels:
        assert "requirement ijson~=3.2.3" in completed.stderr


def test_deploy_uses_a_python_every_dependency_has_wheels_for():
    assert DEPLOY_PYTHON in [param.values[0] for param in WHEELS if param.values[2]]


@pytest.mark.parametrize("configuration_change", [{}, {"batch_size": "0"}], ids=["sync", "bad-setting"])
def test_the_first_line_of_every_sync_names_the_versions_it_runs_on(
    fake_store, make_document, base_configuration, logs, configuration_change
):
    fake_store.add(make_document("Orders"))
    base_configuration.update(configuration_change)

    with contextlib.suppress(connector.ConfigurationError):
        connector.update(base_configuration, {})

    version = importlib.metadata.version
    assert logs.lines[0] == (
        "INFO",
        f"RavenDB connector {connector.__version__} on ravendb {version('ravendb')}, "
        f"requests {version('requests')}, cryptography {version('cryptography')}, "
        f"fivetran-connector-sdk {version('fivetran-connector-sdk')}, Python {platform.python_version()}",
    )
