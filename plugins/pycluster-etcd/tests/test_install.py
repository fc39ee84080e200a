"""Installing the distribution is all it takes: pip install adds ``etcd``, uninstall removes it.

The test works in a throwaway virtual environment that sees everything the test's own
environment has installed (linked in), except this plugin. There it runs pip for real —
``pip install -e plugins/pycluster-etcd`` then ``pip uninstall pycluster-etcd`` — and
``pycluster check`` before, between and after, each in a fresh process. The test's own
environment is never touched.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]
OWN_FILES = ("pycluster_etcd", "__editable__.pycluster_etcd", "__editable___pycluster_etcd")
"""How this distribution's files in site-packages start (an editable install included)."""

CONFIG = """\
node: {name: app@127.0.5.2}
registry:
  backend: etcd
  options: {endpoints: ["127.0.5.200:2379"], lease_ttl: 5}
topologies:
  discovery:
    strategy: etcd
    config: {endpoints: ["127.0.5.200:2379"]}
"""


def throwaway_venv(directory: Path) -> Path:
    """A venv whose site-packages links to ours, without this plugin; its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(directory)],
        check=True,
        capture_output=True,
    )
    python = directory / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OWN_FILES):
            (Path(site) / entry.name).symlink_to(entry)
    return python


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_pip_install_adds_the_backend_and_the_strategy_and_uninstall_removes_them(
    tmp_path: Path,
) -> None:
    python = throwaway_venv(tmp_path / "venv")
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG)
    check = ("-m", "pycluster", "check", str(config))

    def refused() -> None:
        result = run(python, *check)
        assert result.returncode == 2, result.stdout + result.stderr
        for key, what in (
            ("registry.backend", "registry backend"),
            ("topologies.discovery.strategy", "strategy"),
        ):
            match = re.search(rf"{key}: unknown {what} 'etcd' \(known: (.*)\)", result.stderr)
            assert match is not None, result.stderr
            assert "etcd" not in match[1].split(", ")
        assert "crdt, local" in result.stderr

    refused()
    pip = ("-m", "pip", "--disable-pip-version-check", "--no-input")
    installed = run(
        python,
        *pip,
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-e",
        str(PLUGIN),
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    accepted = run(python, *check)
    assert accepted.returncode == 0, accepted.stderr
    assert "registry etcd, 1 topology: discovery (etcd)" in accepted.stdout
    uninstalled = run(python, *pip, "uninstall", "--yes", "pycluster-etcd")
    assert uninstalled.returncode == 0, uninstalled.stdout + uninstalled.stderr
    refused()
