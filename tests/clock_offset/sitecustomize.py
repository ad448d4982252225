"""Every Python process of a test run, moved `TEST_CLOCK_OFFSET_DAYS` days ahead.

`scripts/test.sh` puts this folder on PYTHONPATH when TEST_CLOCK_OFFSET_DAYS is set, so pytest,
the sandbox and each `tap-whoop` it starts read the same moved wall clock (monotonic clocks,
which time durations, are left alone). libfaketime would move the machine's clock instead, but
its 0.9.10 hangs Python's timed lock waits (`sem_clockwait`).
"""

import os

_days = os.environ.get("TEST_CLOCK_OFFSET_DAYS")
if _days:
    import datetime
    import time

    import time_machine

    time_machine.travel(datetime.timedelta(days=float(_days)), tick=True).start()
    # time-machine starts a ticking clock at its first reading: read it now, or each process
    # lags real time + offset by however long its imports take, and their clocks disagree.
    time.time()
