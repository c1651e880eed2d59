"""fastmlp.bench.race_processes: each contender in its own worker process, none left after."""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from fastmlp.bench import _quiesce, race_processes


# The contenders' factories run in the spawned workers, which import them from this module.
def _record_pid(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))


def busy(pid_file: str):
    """A busy zero-argument callable (no sleep), the worker's pid recorded."""
    _record_pid(pid_file)
    return functools.partial(sum, range(10_000))


def build_fails(pid_file: str):
    _record_pid(pid_file)
    raise ValueError("no such contender")


def call_fails(pid_file: str):
    _record_pid(pid_file)
    return functools.partial(int, "not a number")


def dies(pid_file: str):
    _record_pid(pid_file)
    os._exit(3)


def assert_gone(pid_files) -> None:
    assert multiprocessing.active_children() == []
    for f in pid_files:
        pid = int(Path(f).read_text())
        assert pid != os.getpid()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # joined, so not even a zombie


def test_race_processes_times_each_contender_in_its_own_process(tmp_path):
    files = [str(tmp_path / name) for name in ("a", "b")]
    times = race_processes({"a": (busy, (files[0],)), "b": (busy, [files[1]])}, rounds=2, min_time=0.02)
    assert list(times) == ["a", "b"]
    assert all(t > 0 for t in times.values())
    assert Path(files[0]).read_text() != Path(files[1]).read_text()  # two workers
    assert_gone(files)


@pytest.mark.parametrize("factory, message", [
    (build_fails, "ValueError: no such contender"),
    (call_fails, "invalid literal for int() with base 10: 'not a number'"),
    (dies, "its worker process died (exit code 3)"),
])
def test_race_processes_reports_a_failed_worker_and_stops_all(tmp_path, factory, message):
    files = [str(tmp_path / name) for name in ("good", "bad")]
    with pytest.raises(RuntimeError) as err:
        race_processes({"good": (busy, (files[0],)), "bad": (factory, (files[1],))}, rounds=2)
    assert "contender 'bad'" in str(err.value) and message in str(err.value)
    assert_gone(files)


def test_quiesce_waits_until_the_process_threads_are_idle():
    """A worker answers only once its threads stop burning CPU (OpenBLAS's spin after a GEMM)."""
    def spin(seconds=0.3):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    _quiesce(limit=30)
    assert not spinner.is_alive()
