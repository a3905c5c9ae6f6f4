"""Every job (a module of `jobs/` with a `main`) is a console script in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_job_is_a_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    jobs = {
        f"jobs.{path.stem}:main"
        for path in (ROOT / "jobs").glob("*.py")
        if "\ndef main(" in path.read_text()
    }
    assert jobs == set(scripts.values())
    assert all(name == "ergo-" + target[5:-5].replace("_", "-") for name, target in scripts.items())
