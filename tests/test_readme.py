"""The README's first command works on a stock Python: Debian's own /usr/bin/python3.

Debian 12+, Ubuntu 23.04+ and Homebrew mark their Python as externally managed (PEP 668), so a
bare `pip install nox` is refused there. The README makes a venv and installs nox into it; these
tests run exactly that with Debian's python3 in a temporary directory, and show the refusal that
keeps the README from saying `pip install nox`. .ci/run makes its nox the same way.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from dogbooth.core.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Variables that would point pip or Python somewhere else than a stock machine's defaults.
_NOT_STOCK = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_BREAK_SYSTEM_PACKAGES", "PIP_USER",
              "PIP_TARGET", "PIP_PREFIX", "PIP_REQUIRE_VIRTUALENV")  # fmt: skip


def get_going_commands() -> list[str]:
    """The commands of the first ```bash block under '## Get going', comments dropped."""
    section = README.read_text().split("\n## Get going\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md: no ```bash block under '## Get going'"
    return [line.split("#", 1)[0].strip() for line in block[1].splitlines() if line.split("#", 1)[0].strip()]


def setup_and_nox() -> tuple[list[str], str]:
    """The README's setup commands (venv, pip install), and the nox they install."""
    setup = [part.strip() for part in get_going_commands()[0].split("&&") if " -s " not in part]
    venv = shlex.split(setup[0])
    assert venv[:3] == ["python3", "-m", "venv"], f"the first command should make a venv: {setup[0]!r}"
    return setup, f"{venv[-1]}/bin/nox"


def stock_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_STOCK}
    env.update(HOME=str(home), PATH="/usr/bin:/bin")
    return env


def debian_python() -> Path:
    """/usr/bin/python3 when Debian's package manager owns it; the test is skipped otherwise."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 on this machine")
    dpkg = shutil.which("dpkg", path="/usr/bin:/bin")
    owned = dpkg and subprocess.run([dpkg, "-S", str(SYSTEM_PYTHON.resolve())], capture_output=True).returncode == 0
    if not owned:
        pytest.skip("/usr/bin/python3 is not Debian's (no dpkg package owns it)")
    return SYSTEM_PYTHON


def test_the_readme_gives_nox_from_a_venv_never_a_bare_pip_install() -> None:
    commands = get_going_commands()
    setup, nox = setup_and_nox()
    assert any(re.search(r"/bin/pip install .*\bnox\b", part) for part in setup), setup
    sessions = [c.split("&&")[-1].strip() for c in commands if " -s " in c]
    assert sessions == [f"{nox} -s dev", f"{nox} -s tests"], sessions
    bare = [c for c in commands if re.search(r"(^|&&\s*)(python3? -m )?pip3? install", c)]
    assert bare == [], f"a system Python may refuse these (PEP 668): {bare}"


def test_ci_makes_its_nox_the_readme_way() -> None:
    setup, nox = setup_and_nox()
    script = CI_RUN.read_text()
    assert f"\n{setup[0]}\n" in script, f".ci/run does not make its venv with {setup[0]!r}"
    assert re.search(rf"\n{re.escape(nox.removesuffix('/nox'))}/pip install .*\bnox\n", script)
    assert f"\n{nox} -s tests\n" in script
    assert re.search(rf"\n{re.escape(nox)} -s loadtest -- ", script), ".ci/run must still run the load test"


def test_the_readme_setup_works_with_debians_python3(tmp_path: Path) -> None:
    python = debian_python()
    setup, nox = setup_and_nox()
    script = " && ".join(setup)
    script = re.sub(r"^python3\b", str(python), script)  # exactly Debian's, whatever PATH says
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=stock_env(tmp_path), capture_output=True, text=True, timeout=480
    )
    assert result.returncode == 0, f"$ {script}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    venv = tmp_path / nox.split("/bin/")[0]
    assert f"home = {python.parent}" in (venv / "pyvenv.cfg").read_text()
    version = subprocess.run([str(tmp_path / nox), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"\d{4}\.\d+\.\d+\S*", (version.stdout + version.stderr).strip())


def test_a_bare_pip_install_nox_is_refused_by_debians_python3(tmp_path: Path) -> None:
    python = debian_python()
    marker = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    ) / "EXTERNALLY-MANAGED"  # fmt: skip
    assert marker.is_file(), f"{marker} is missing: this Debian predates PEP 668 (Debian 12)"
    # --dry-run: where it were not refused, nothing would be installed. pip checks PEP 668 first all
    # the same (only `--dry-run --report` is exempt), so the answer is the one `pip install nox` gets.
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "nox"],
        cwd=tmp_path, env=stock_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    if "No module named pip" in output:
        return  # no python3-pip: refused outright; with it, the marker above makes pip refuse
    assert "error: externally-managed-environment" in output, output
