"""The evaluation stores of the sensitivity strategy (search/evaluations.py): a claim goes to
one worker, a silent claim is taken over, a stopped worker gives its claim back, a study
refuses another search, and two `imcc search --strategy sensitivity` workers sharing one
database divide the evaluations and find what one worker finds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imcc.errors import UserError
from imcc.search.evaluations import STALE_BEATS, JsonStore, SqlStore

IDENTITY = {"model": "m.onnx", "target": "hybrid", "search_samples": 16}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the stores: a SQLite file, or the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evaluations.db'}"
    return request.getfixturevalue("postgres")


def _stores(url: str, study: str, heartbeat: float = 10.0) -> tuple[SqlStore, SqlStore]:
    """Two workers' stores on one study (each test its own study: the server is shared)."""
    return (
        SqlStore(url, study, IDENTITY, heartbeat, worker="a"),
        SqlStore(url, study, IDENTITY, heartbeat, worker="b"),
    )


def test_a_claim_goes_to_one_worker_and_its_result_to_all(url: str) -> None:
    a, b = _stores(url, "one")
    with a.claim("k") as held_a:
        assert held_a
        with b.claim("k") as held_b:
            assert not held_b
        assert b.get("k") is None and b.all() == {}
        a.put("k", {"accuracy": 0.5})
    assert b.get("k") == {"accuracy": 0.5} and b.all() == {"k": {"accuracy": 0.5}}
    with b.claim("k") as held_b:  # stored: nobody runs it again
        assert not held_b
    a.close()
    b.close()


def test_a_stopped_worker_gives_its_claim_back_and_a_silent_one_is_taken_over(
    url: str,
) -> None:
    # a period long enough that a loaded machine checks `a` before `b`'s claim goes stale
    a, b = _stores(url, "stopped", heartbeat=0.5)
    with pytest.raises(KeyboardInterrupt), a.claim("k") as held:
        assert held
        raise KeyboardInterrupt
    with b.claim("k") as held:  # given back at once
        assert held
        b.put("k", {"accuracy": 1.0})
    assert a._take("j")  # a claim whose worker dies: no heartbeat thread runs
    assert not b._take("j")
    time.sleep(STALE_BEATS * 0.5 + 0.1)
    assert b._take("j")  # three periods silent: taken over
    assert not a._take("j")
    a.close()
    b.close()


def test_a_beating_claim_is_not_taken_over(url: str) -> None:
    # a 0.2 s beat (stale after 0.6 s silent), watched for three stale periods: a 0.05 s beat
    # missed its 0.15 s once with both cores busy (a training run beside the suite)
    a, b = _stores(url, "beating", heartbeat=0.2)
    with a.claim("k") as held:
        assert held
        time.sleep(STALE_BEATS * 0.2 * 3)
        with b.claim("k") as other:
            assert not other
    a.close()
    b.close()


def test_a_study_refuses_another_search(url: str) -> None:
    SqlStore(url, "s", IDENTITY).close()
    SqlStore(url, "s", dict(IDENTITY)).close()  # the same search resumes
    with pytest.raises(UserError, match="search_samples=16 \\(now 32\\)"):
        SqlStore(url, "s", {**IDENTITY, "search_samples": 32})
    SqlStore(url, "other", {**IDENTITY, "search_samples": 32}).close()


def test_the_json_store_keeps_what_it_is_given(tmp_path: Path) -> None:
    store = JsonStore(tmp_path / "e.json", IDENTITY)
    with store.claim("k") as held:
        assert held
        store.put("k", {"accuracy": 0.25})
    assert JsonStore(tmp_path / "e.json", dict(IDENTITY)).all() == {"k": {"accuracy": 0.25}}
    assert not (tmp_path / "e.partial").exists()


def test_stores_refuse_another_search_and_another_results_version(
    tmp_path: Path, url: str, monkeypatch
) -> None:
    """A JSON store of another search, or written under another results version, or by an
    imcc that recorded no identity, is refused when read; the SQL store and the trial studies
    refuse another results version too; `named_by` keeps each identity and version in a file
    of its own, so it refuses none."""
    import optuna

    from imcc.search import evaluations, storage

    path = tmp_path / "e.json"
    JsonStore(path, IDENTITY).put("k", {"accuracy": 0.25})
    with pytest.raises(UserError, match="another search: search_samples=16 \\(now 32\\)"):
        JsonStore(path, {**IDENTITY, "search_samples": 32}).all()
    (tmp_path / "old.json").write_text('{"k": {"accuracy": 0.5}}')  # a file of an earlier imcc
    with pytest.raises(UserError, match="without their search's identity"):
        JsonStore(tmp_path / "old.json", IDENTITY).all()
    for damaged in ('{"identity": {', "[1, 2]", "\udcff"):
        (tmp_path / "bad.json").write_text(damaged, errors="surrogateescape")
        with pytest.raises(UserError, match="is not an evaluation store"):
            JsonStore(tmp_path / "bad.json", IDENTITY).get("k")
        assert (tmp_path / "bad.json").read_text(errors="surrogateescape") == damaged
    named = JsonStore.named_by(tmp_path, "cache", IDENTITY)
    named.put("k", {"accuracy": 0.75})
    assert JsonStore.named_by(tmp_path, "cache", dict(IDENTITY)).get("k") == {"accuracy": 0.75}
    other = JsonStore.named_by(tmp_path, "cache", {**IDENTITY, "search_samples": 32})
    assert other.path != named.path and other.all() == {}
    SqlStore(url, "s", IDENTITY).close()
    sqlite = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'trials.db'}")
    storage.open_study(sqlite, "t", ["minimize"], {"model": "m"})
    storage.open_study(sqlite, "t", ["minimize"], {"model": "m"})  # the same search resumes
    # a worker opening the study while another writes its identity sees the version first
    written: list[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(optuna.Study, "set_user_attr", lambda study, key, _: written.append(key))
        storage.open_study(sqlite, "fresh", ["minimize"], {"a": 1, "model": "m", "z": 2})
    assert written == ["results_version", "a", "model", "z"]
    # a study without a results version (an earlier imcc) is another version's
    bare = optuna.create_study(storage=sqlite, study_name="bare", directions=["minimize"])
    bare.set_user_attr("model", "m")
    with pytest.raises(UserError, match="another imcc version \\(results_version=None"):
        storage.open_study(sqlite, "bare", ["minimize"], {"model": "m"})
    monkeypatch.setattr(storage, "RESULTS_VERSION", storage.RESULTS_VERSION + 1)
    with pytest.raises(UserError, match="another imcc version"):
        JsonStore(path, IDENTITY).all()
    with pytest.raises(UserError, match="another imcc version"):
        SqlStore(url, "s", IDENTITY)
    with pytest.raises(UserError, match="another imcc version") as refused:
        storage.open_study(sqlite, "t", ["minimize"], {"model": "m"})
    assert "results computed by other rules are not reused" in refused.value.hint
    bumped = JsonStore.named_by(tmp_path, "cache", IDENTITY)
    assert bumped.path != named.path and bumped.all() == {}
    assert evaluations.versioned(IDENTITY)["results_version"] == storage.RESULTS_VERSION


def _worker(url: str, out: Path, *storage: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "imcc", "search", "digits-cnn", "--target", "hybrid",
        "--data", "digits-cnn", "--strategy", "sensitivity", "--limit", "16", "--probe", "16",
        "--check", "32", "--max-accuracy-drop", "5", "--out", str(out), *storage,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_divide_the_evaluations_and_find_what_one_finds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [_worker(url, tmp_path / n, "--storage", url) for n in "ab"]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    one = _worker(url, tmp_path / "one")  # its own sensitivity.json
    _, err = one.communicate(timeout=300)
    assert one.returncode == 0, err
    records = [json.loads((tmp_path / n / "pareto.json").read_text()) for n in ("a", "b", "one")]
    assert records[0]["best"] == records[1]["best"] == records[2]["best"]
    assert records[0]["pareto"] == records[2]["pareto"]
    single = json.loads((tmp_path / "one" / "sensitivity.json").read_text())["evaluations"]
    with sqlite3.connect(tmp_path / "shared.db") as db:
        rows = db.execute("SELECT key, worker FROM imcc_evaluations").fetchall()
    assert {key for key, _ in rows} == set(single)  # each evaluation stored once
    assert len({worker for _, worker in rows}) == 2  # both workers ran some
    assert sum(r["trials"]["this_run"] for r in records[:2]) <= len(rows)


def test_a_damaged_sqlite_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    damaged = tmp_path / "evaluations.db"
    damaged.write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        SqlStore(f"sqlite:///{damaged}", "s", IDENTITY)
    assert damaged.read_bytes() == b""
