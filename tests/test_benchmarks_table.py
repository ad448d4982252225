"""benchmarks/README.md's one table of results is what benchmarks/results/*.json say.

`python benchmarks/table.py` writes it from those files; this fails when someone edited the
table by hand, or ran a benchmark and did not regenerate it.
"""

from __future__ import annotations

import importlib.util
import json
import typing as t
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "table.py"


def load_table_script() -> t.Any:
    spec = importlib.util.spec_from_file_location("benchmarks_table", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table_script() -> t.Any:
    return load_table_script()


def test_the_committed_table_is_the_generated_one(table_script: t.Any) -> None:
    readme = table_script.README.read_text(encoding="utf-8")
    assert table_script.with_table(readme, table_script.table()) == readme, (
        "benchmarks/README.md's results table is stale or edited by hand: "
        "run `.venv/bin/python benchmarks/table.py`"
    )


def test_check_mode_agrees(table_script: t.Any) -> None:
    assert table_script.main(["--check"]) == 0


def test_one_row_per_results_file(table_script: t.Any) -> None:
    files = sorted(path.stem for path in table_script.RESULTS.glob("*.json"))
    assert files == sorted(table_script.ROWS)
    rows = [line for line in table_script.table().splitlines() if line.startswith("| `")]
    assert len(rows) == len(files)
    for stem in files:
        command = json.loads((table_script.RESULTS / f"{stem}.json").read_text())["command"]
        assert sum(f"`.venv/bin/{command}`" in row for row in rows) == 1, stem


def test_the_readme_has_one_table_of_results(table_script: t.Any) -> None:
    """Every markdown table row in benchmarks/README.md is inside the generated table."""
    readme = table_script.README.read_text(encoding="utf-8")
    generated = set(table_script.table().splitlines())
    stray = [line for line in readme.splitlines() if line.startswith("|") and line not in generated]
    assert stray == [], stray
