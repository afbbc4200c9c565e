"""The Quick Start of the original (sync) beautyspot README, as written, on beautyspot-async.

Run it twice: the second run executes nothing, every answer comes from
./my_experiment.db. The seed's names ``bs.Project`` and ``@project.task``
still work (deprecated aliases of ``bs.Spot`` and ``@spot.mark``); new code
should start from ``examples/quickstart.py``, the async form.
"""

import time
import warnings

import beautyspot_async as bs

warnings.simplefilter("ignore", DeprecationWarning)  # bs.Project is the old name of bs.Spot

# Project definition (creates "./my_experiment.db" by default)
project = bs.Project("my_experiment")


@project.task
def heavy_process(text):
    # Something slow or billed per call
    time.sleep(2)
    return f"Processed: {text}"


# Batch processing
inputs = ["A", "B", "C", "A"]

for i in inputs:
    # 1. "A", "B", "C" run the first time
    # 2. the last "A" comes straight from the database (0 seconds)
    # 3. after an interruption, only unfinished inputs run next time
    print(heavy_process(i))
