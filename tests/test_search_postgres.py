"""`imcc search --storage postgresql://...`: several workers share one study on a throwaway
PostgreSQL server (Debian's packages; `.ci/run` installs them). No trial is lost or stored
twice, concurrent workers draw different trials, and a worker killed mid-run leaves no trial
behind as running once its heartbeat is stale."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from imcc.search import SearchConfig, run_search
from imcc.search.storage import (
    ILLEGAL,
    INTERRUPTED,
    PIPELINE,
    RESULT,
    fail_stale_trials,
    finished,
    open_storage,
)

FAST = ["--limit", "32", "--probe", "16", "--check", "64", "--max-accuracy-drop", "60"]
"""Small accuracy subsets: a trial takes a few tenths of a second on digits-cnn."""


def _worker(url: str, study: str, out: Path, trials: int) -> subprocess.Popen:
    """Start one `imcc search` worker on the shared study (the same `--seed` as the others)."""
    command = [
        sys.executable,
        "-m",
        "imcc",
        "search",
        "digits-cnn",
        "--target",
        "xpert",
        "--data",
        "digits-cnn",
        "--trials",
        str(trials),
        "--strategy",
        "pareto",
        "--random-trials",
        "0",
        "--study",
        study,
        "--storage",
        url,
        "--out",
        str(out),
        *FAST,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _reaped(workers: list[subprocess.Popen]) -> Iterator[None]:
    """Kill the workers still running (or stopped) when the block ends, failed or not."""
    try:
        yield
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


def _trials_in(url: str, study: str) -> tuple[int, set[int]]:
    """Return a study's finished trial count and its running trials' numbers, read with SQL
    (optuna would create the tables itself while the workers create them)."""
    import psycopg2

    port = url.rsplit(":", 1)[1].split("/")[0]
    try:
        with psycopg2.connect(host="127.0.0.1", port=port, user="imcc", dbname="search") as db:
            cursor = db.cursor()
            cursor.execute(
                "SELECT t.number, t.state, EXISTS (SELECT 1 FROM trial_user_attributes a "
                "WHERE a.trial_id = t.trial_id AND a.key = %s) FROM trials t "
                "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = %s",
                (ILLEGAL, study),
            )
            rows = cursor.fetchall()
    except psycopg2.Error:  # the tables do not exist yet
        return 0, set()
    done = sum(state in ("COMPLETE", "PRUNED") or illegal for _, state, illegal in rows)
    return done, {number for number, state, _ in rows if state == "RUNNING"}


def _stop_mid_trial(worker: subprocess.Popen, url: str, study: str) -> int:
    """Stop (SIGSTOP) a worker while it evaluates a trial, once the study holds 4 finished
    trials; return that trial's number: the one still running after the other worker has
    finished two more."""
    deadline = time.monotonic() + 90
    while True:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline
        done, running = _trials_in(url, study)
        if done < 4 or len(running) < 2:
            time.sleep(0.05)
            continue
        os.kill(worker.pid, signal.SIGSTOP)
        stopped, frozen = _trials_in(url, study)
        while (now := _trials_in(url, study))[0] < stopped + 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if len(left := frozen & now[1]) == 1:
            return left.pop()
        os.kill(worker.pid, signal.SIGCONT)  # it was between two trials: try again


def _search(url: str, study: str, out: Path, trials: int) -> dict:
    """Run a worker in this process (`imcc search` with the flags of `_worker`); return its
    pareto.json record."""
    result = run_search(
        SearchConfig(
            "digits-cnn",
            "xpert",
            "digits-cnn",
            trials=trials,
            strategy="pareto",
            random_trials=0,
            study=study,
            storage=url,
            out=out,
            search_samples=32,
            probe_samples=16,
            check_samples=64,
            max_accuracy_drop=60,
        )
    )
    return result.record


def _check_study(trials: list[optuna.trial.FrozenTrial], record: dict) -> None:
    """Check that every finished trial is stored once and pareto.json agrees with them."""
    done = [t for t in trials if finished(t)]
    assert len({t.number for t in trials}) == len(trials)
    assert len({t._trial_id for t in trials}) == len(trials)
    draws = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(draws)) == len(draws), "two trials drew the same choices"
    assert all(PIPELINE in t.user_attrs for t in done)
    assert all(RESULT in t.user_attrs or ILLEGAL in t.user_attrs for t in done)
    assert record["trials"]["finished"] == len(done)
    by_number = {t.number: t for t in done if t.state.name == "COMPLETE"}
    assert record["pareto"]
    for point in record["pareto"]:
        trial = by_number[point["trial"]]
        assert trial.user_attrs[PIPELINE] == point["pipeline"]
        assert trial.user_attrs[RESULT]["metrics"]["edap"] == point["edap"]


def test_two_workers_share_one_study_without_losing_or_repeating_trials(
    postgres: str, tmp_path: Path
) -> None:
    trials = 12
    workers = [_worker(postgres, "shared", tmp_path / name, trials) for name in ("a", "b")]
    records = []
    with _reaped(workers):
        for worker, name in zip(workers, ("a", "b"), strict=True):
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            assert "Traceback" not in err and "Pareto front" in out
            records.append(json.loads((tmp_path / name / "pareto.json").read_text()))
    stored = optuna.load_study(study_name="shared", storage=postgres).trials
    done = sum(finished(t) for t in stored)
    # each worker asks while fewer than --trials are finished: at most one trial more each
    assert trials <= done <= trials + 1
    assert sum(r["trials"]["this_run"] for r in records) == done  # none lost, none twice
    assert all(r["trials"]["this_run"] >= 1 for r in records)
    assert not [t for t in stored if t.state.name == "RUNNING"]
    assert all(r["storage"] == postgres for r in records)
    record = _search(postgres, "shared", tmp_path / "report", trials)
    assert record["trials"]["this_run"] == 0
    _check_study(optuna.load_study(study_name="shared", storage=postgres).trials, record)


def test_killed_worker_loses_no_finished_trial_and_its_running_one_goes_stale(
    postgres: str, tmp_path: Path
) -> None:
    trials = 12
    killed, other = (_worker(postgres, "killed", tmp_path / name, trials) for name in "ab")
    with _reaped([killed, other]):
        orphan = _stop_mid_trial(killed, postgres, "killed")
        os.kill(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=30)
        study = optuna.load_study(study_name="killed", storage=postgres)
        before = {t.number: (t.params, t.user_attrs, t.values) for t in study.trials if finished(t)}
        assert len(before) >= 4
        # started again at once beside the other worker, with two more trials to run (the
        # other stops at 12 or 13); with the CLI's heartbeat period, 30 s of grace, the
        # orphan still looks alive to it
        restart = _search(postgres, "killed", tmp_path / "a2", trials + 2)
        assert restart["trials"]["this_run"] >= 1
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
    watcher = optuna.load_study(study_name="killed", storage=open_storage(postgres, 1.0))
    deadline = time.monotonic() + 20
    while watcher.get_trials(states=(TrialState.RUNNING,)):  # three missed heartbeats
        fail_stale_trials(watcher)
        assert time.monotonic() < deadline
        time.sleep(0.25)
    record = _search(postgres, "killed", tmp_path / "report", trials + 2)
    stored = optuna.load_study(study_name="killed", storage=postgres).trials
    kept = {t.number: (t.params, t.user_attrs, t.values) for t in stored if t.number in before}
    assert kept == before
    assert trials + 2 <= sum(finished(t) for t in stored) <= trials + 3
    assert not [t for t in stored if t.state.name == "RUNNING"]
    stale = [t for t in stored if t.user_attrs.get(INTERRUPTED) == "no heartbeat"]
    assert [t.number for t in stale] == [orphan] and stale[0].state.name == "FAIL"
    assert record["trials"]["interrupted"] == 1
    _check_study(stored, record)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_without_heartbeat_goes_stale_too(postgres: str) -> None:
    storage = open_storage(postgres, 0.2)
    study = optuna.create_study(study_name="silent", storage=storage)
    orphan = study.ask()  # a worker killed between creating a trial and its first heartbeat
    assert fail_stale_trials(study) == []  # it gets a heartbeat now, stale three periods later
    time.sleep(0.7)
    assert fail_stale_trials(study) == [orphan.number]
    trial = study.trials[0]
    assert trial.state is TrialState.FAIL and trial.user_attrs[INTERRUPTED] == "no heartbeat"
    assert fail_stale_trials(study) == []
