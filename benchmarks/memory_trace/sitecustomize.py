"""Python loads this module at start in every process with this folder on PYTHONPATH: the
operator that `operator_scale.py --trace-memory` starts. With FLIPT_BENCH_TRACE_DIR set, SIGUSR2
starts tracing allocations (tracemalloc: after the imports, which it slowed 35-fold, past the
operator's start timeout), and snapshots are written there for the benchmark to read:
`peak-<pid>.snapshot`, taken whenever traced memory past 20 MB has grown by a tenth since the
last one (so within a tenth of the high-water mark), and `now-<pid>.snapshot` on SIGUSR1."""

import os

if os.environ.get("FLIPT_BENCH_TRACE_DIR"):
    import signal
    import threading
    import time
    import tracemalloc
    from pathlib import Path

    _out = Path(os.environ["FLIPT_BENCH_TRACE_DIR"])

    def _dump(name: str) -> None:
        partial = _out / f"{name}-{os.getpid()}.partial"
        tracemalloc.take_snapshot().dump(str(partial))
        os.replace(partial, _out / f"{name}-{os.getpid()}.snapshot")

    def _follow_peak() -> None:
        largest = 20 * 2**20 / 1.1
        while True:
            time.sleep(1.0)
            current, _ = tracemalloc.get_traced_memory()
            if current > largest * 1.1:
                largest = current
                _dump("peak")

    def _start(*_: object) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("FLIPT_BENCH_TRACE_FRAMES", "12")))
            threading.Thread(target=_follow_peak, daemon=True, name="tracemalloc-peak").start()

    signal.signal(signal.SIGUSR2, _start)
    signal.signal(signal.SIGUSR1, lambda *_: _dump("now"))
