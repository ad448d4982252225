"""End to end: settings reach the tap under Meltano exactly as the user typed them.

Meltano's `date_iso8601` kind would read `2024-13-01` as 13 January and pass the tap a date the
user never wrote; declared as text, the value arrives as typed and the tap's own check refuses
it in one line.
"""

from __future__ import annotations

import pytest

from tests import test_deletions_e2e, test_pipelines
from tests.test_pipelines import MeltanoProject, log_tail

pytestmark = pytest.mark.e2e

meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema
whoop = test_deletions_e2e.whoop
project = test_deletions_e2e.project


@pytest.mark.parametrize("setting", ["start_date", "end_date"])
def test_a_date_meltano_cannot_read_reaches_the_tap_as_typed_and_is_refused(
    project: MeltanoProject, setting: str
) -> None:
    assert project.meltano("config", "set", "tap-whoop", setting, "2024-13-01").returncode == 0

    run = project.meltano("run", "tap-whoop", "target-duckdb")

    output = log_tail(run, 400)
    assert run.returncode != 0, output
    assert f"{setting} '2024-13-01' is not a date-time: use ISO 8601" in output
    assert "Traceback" not in output
