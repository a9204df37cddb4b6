"""`grader run --scheduler`: the toy assignment on a two-worker Dask LocalCluster.

Same grades as a local run; a worker killed mid-batch loses nothing; no Dask process
(or kernel) outlives the cluster."""

import csv
import os
import shutil
import signal
from contextlib import contextmanager

import psutil
import pytest

from grader import __version__, cluster
from grader.errors import ConfigurationError
from grader.executor import GradeOptions
from grader.results import Status
from grader.runner import run_batch
from grader.sandbox import wait_gone

from conftest import TOY_COURSE, sandbox_mode

distributed = pytest.importorskip("distributed")

REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"
STUB = TOY_COURSE / "assignments" / "toy" / "toy.ipynb"


def _mixed_batch(root):
    """Right, unanswered, unreadable, a folder with a data file, an ambiguous folder."""
    root.mkdir()
    shutil.copy(REFERENCE, root / "alice.ipynb")
    shutil.copy(STUB, root / "bob.ipynb")
    (root / "carol.ipynb").write_text('{"cells": [')
    (root / "dave").mkdir()
    shutil.copy(REFERENCE, root / "dave" / "my work.ipynb")
    (root / "dave" / "notes.txt").write_text("data beside the notebook")
    (root / "erin").mkdir()
    shutil.copy(REFERENCE, root / "erin" / "a.ipynb")
    shutil.copy(STUB, root / "erin" / "b.ipynb")
    return root


def _grades(out):
    """grades.csv without the columns that differ from run to run."""
    return [(r["student_id"], r["score"], r["max_score"], r["status"], r["message"])
            for r in csv.DictReader((out / "grades.csv").open())]


def _descendants():
    return {p.pid: p for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(_cmdline(p))}


def _cmdline(process):
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@contextmanager
def local_cluster():
    """Two single-threaded worker processes; afterwards, every process they started is gone.

    Yields the cluster and a dict the test may add processes to (a killed worker's kernel)."""
    before = set(_descendants())
    dask_cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=50)
    started: dict = {}
    try:
        yield dask_cluster, started
    finally:
        started.update(_descendants())
        dask_cluster.close()
        left = wait_gone([pid for pid in started if pid not in before], timeout=15)
        assert left == [], f"processes outlived the cluster: {left}"


def test_a_cluster_grades_a_mixed_batch_exactly_like_a_local_run(tmp_path, toy):
    subs = _mixed_batch(tmp_path / "subs")
    options = GradeOptions(sandbox=sandbox_mode())
    local = run_batch(subs, toy, tmp_path / "local", options, workers=2, use_cache=False,
                      progress=False)
    with local_cluster() as (dask_cluster, _):
        remote = run_batch(subs, toy, tmp_path / "cluster", options, use_cache=False,
                           progress=False, scheduler=dask_cluster.scheduler_address)
    assert _grades(tmp_path / "cluster") == _grades(tmp_path / "local")
    assert [row[3] for row in _grades(tmp_path / "cluster")] == \
        ["ok", "error", "invalid", "ok", "invalid"]  # alice, bob, carol, dave, erin
    assert (remote.executed, remote.cached) == (local.executed, local.cached) == (5, 0)
    by_id = {r.student_id: r for r in remote.results}
    assert by_id["alice"].source_path == str(subs / "alice.ipynb")  # not the worker's copy
    assert by_id["alice"].cache_key == {r.student_id: r for r in local.results}["alice"].cache_key
    assert sorted(p.name for p in (tmp_path / "cluster" / "executed").iterdir()) == \
        ["alice.ipynb", "bob.ipynb", "dave.ipynb"]
    assert by_id["alice"].executed_notebook == str(tmp_path / "cluster" / "executed" /
                                                   "alice.ipynb")
    # a re-run takes the notebooks from the cache and reports the ambiguous folder again
    # itself: nothing is sent, so the scheduler is not even contacted (none listens there)
    again = run_batch(subs, toy, tmp_path / "cluster", options, progress=False,
                      scheduler="tcp://127.0.0.1:9")
    assert (again.executed, again.cached) == (1, 4)
    assert _grades(tmp_path / "cluster") == _grades(tmp_path / "local")


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, toy):
    subs = tmp_path / "subs"
    subs.mkdir()
    for index in range(4):
        shutil.copy(REFERENCE if index % 2 == 0 else STUB, subs / f"s{index}.ipynb")
    killed: list[tuple[str, list]] = []
    with local_cluster() as (dask_cluster, seen):
        client = distributed.Client(dask_cluster, set_as_default=False)
        pids = client.run(os.getpid)

        def kill_a_busy_worker(result, cached):
            if killed:
                return
            busy = {addr: keys for addr, keys in client.processing().items() if keys}
            if busy:
                addr = sorted(busy)[0]
                seen.update(_descendants())  # its kernel too must be gone at the end
                killed.append((addr, list(busy[addr])))
                os.kill(pids[addr], signal.SIGKILL)

        try:
            summary = run_batch(subs, toy, tmp_path / "out", GradeOptions(sandbox=sandbox_mode()),
                                use_cache=False, progress=False, on_result=kill_a_busy_worker,
                                scheduler=dask_cluster.scheduler_address)
        finally:
            client.close()
    assert killed and killed[0][1], "no worker was busy when the first result came"
    assert [row[:4] for row in _grades(tmp_path / "out")] == [
        ("s0", "5", "5", "ok"), ("s1", "0", "5", "error"),
        ("s2", "5", "5", "ok"), ("s3", "0", "5", "error")]
    assert summary.statuses[Status.GRADER_ERROR] == 0 and summary.executed == 4


class _FakeClient:
    """Just what the preflight asks a Dask client."""

    def __init__(self, **facts):
        self.facts = {"tcp://w1:1": {"grader": __version__, "sandbox_problem": None, "gpus": 1},
                      "tcp://w2:1": {"grader": __version__, "sandbox_problem": None, "gpus": 1,
                                     **facts}}

    def wait_for_workers(self, count, timeout):
        return None

    def run(self, function):
        return self.facts


@pytest.mark.parametrize(("facts", "options", "message"), [
    ({"grader": "0.0.1"}, GradeOptions(), r"must run tf-grader .* these do not: tcp://w2:1 \(0.0.1\)"),
    ({"sandbox_problem": "bubblewrap is not installed"}, GradeOptions(sandbox="required"),
     r"--sandbox required, but bubblewrap cannot run on these workers: tcp://w2:1 \(bubblewrap"),
    ({"gpus": 0}, GradeOptions(device="gpu"), "--device gpu, but these workers have no GPU: tcp://w2:1"),
])
def test_the_preflight_refuses_workers_that_would_grade_differently(facts, options, message):
    with pytest.raises(ConfigurationError, match=message):
        cluster._preflight(_FakeClient(**facts), "tcp://s:8786", options)
    cluster._preflight(_FakeClient(), "tcp://s:8786", options)  # the same options, good workers


def test_device_auto_on_a_worker_takes_its_gpus_round_robin(tmp_path, monkeypatch):
    from test_devices import _fake_nvidia_smi

    _fake_nvidia_smi(tmp_path, monkeypatch)
    monkeypatch.setitem(cluster._SLOTS, "next", None)
    chosen = [cluster._next_kernel_options(GradeOptions(device="auto")).device for _ in range(3)]
    assert chosen == ["gpu:0", "gpu:1", "gpu:0"]
