"""A test-only hook that freezes the sidecar at a named stage, so a test can kill -9 it there.

Set FLIPT_GIT_SYNC_TEST_PAUSE_AT to a stage name (mid-fetch, mid-publish, mid-ref-update,
mid-replay, after-push, mid-repack, mid-pack-removal) and FLIPT_GIT_SYNC_TEST_PAUSE_FILE to a path: when the stage is
reached the sidecar writes that file and sleeps until killed. Unset, this does nothing.
"""

from __future__ import annotations

import os
import time

PAUSE_AT_ENV = "FLIPT_GIT_SYNC_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "FLIPT_GIT_SYNC_TEST_PAUSE_FILE"


def pause_point(stage: str) -> None:
    if os.environ.get(PAUSE_AT_ENV) != stage:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, "w") as f:
            f.write(stage)
    while True:
        time.sleep(3600)
