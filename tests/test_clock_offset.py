"""The +60-day run's moved clock (tests/clock_offset) is the same in every process it starts.

The sandbox and each `tap-whoop` or worker it starts compare times across processes (token
expiry, the shared request window), so each process must be moved by the same offset exactly,
however long its imports take before it first reads the clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLOCK_OFFSET = Path(__file__).resolve().parent / "clock_offset"
DAYS = 60

READ_LATE = """
import time
import time_machine
time.sleep(0.5)  # a slow start-up: imports before the first reading of the clock
moved = time.time()
real = time_machine._time_machine.original_time()
print(real + DAYS * 86400 - moved)
""".replace("DAYS", str(DAYS))


def test_a_process_that_reads_the_clock_late_is_moved_by_exactly_the_offset() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(CLOCK_OFFSET),
        "TEST_CLOCK_OFFSET_DAYS": str(DAYS),
    }

    done = subprocess.run(
        [sys.executable, "-c", READ_LATE], env=env, capture_output=True, text=True, check=True
    )

    lag = float(done.stdout)
    assert abs(lag) < 0.1, f"the moved clock lags real time + {DAYS} days by {lag:.3f} s"
