"""Where trials are kept: an optuna RDB storage (SQLite in `--out` by default, or any URL).

Every trial is written when it finishes, so a killed search loses at most the trials it was
running. A study records what it searches (model, target, data, strategy, objective, budgets)
and refuses to be resumed with something else. Several processes may share one study through
a server database (`--storage postgresql://user@host/db`): each asks the storage for the next
trial and stops once the study holds the requested number of finished trials. Workers that
finish together may overshoot it: a worker asks while fewer are finished, so the study ends
with at most one trial more per extra worker. A running trial's worker records a heartbeat in
the storage every `heartbeat` seconds; a trial silent for three periods belongs to a killed
worker (or a lost machine) and the next worker to look fails it, marked `interrupted`.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from imcc.errors import UserError

DATABASE = "search.db"
"""The SQLite file a search keeps its trials in when no `--storage` is given."""

PIPELINE = "pipeline"  # user attribute: the trial's full pipeline string, set when it starts
RESULT = "result"  # user attribute: costs, accuracy, constraints of an evaluated trial
ILLEGAL = "illegal"  # user attribute: why the passes rejected the trial
INTERRUPTED = "interrupted"  # user attribute: Ctrl-C stopped the trial, or its worker died

HEARTBEAT = 10.0
"""Seconds between the heartbeats of a running trial; three missed ones make it stale."""


def storage_url(storage: str | None, out: Path) -> str:
    """Return the storage URL: `--storage` as given, else `sqlite:///OUT/search.db`."""
    if storage is None:
        return f"sqlite:///{(out / DATABASE).resolve()}"
    return storage


def open_storage(url: str, heartbeat: float = HEARTBEAT) -> optuna.storages.RDBStorage:
    """Open (creating its tables if needed) the database of a SQLAlchemy URL optuna accepts,
    with trial heartbeats every `heartbeat` seconds; an unknown scheme, a missing driver or an
    unreachable server is a UserError."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    hint = "e.g. sqlite:///search.db or postgresql://user:password@host/database"
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise UserError(f"--storage: unknown database URL scheme '{scheme}'", hint=hint) from None
    engine_kwargs = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        storage = _create(url, engine_kwargs, heartbeat)
        if parsed.get_backend_name() == "sqlite":
            _fast_sqlite(storage)
        return storage
    except ModuleNotFoundError as exc:
        raise UserError(f"--storage: the {parsed.get_backend_name()} driver is not installed "
                        f"({exc.name})", hint=f"pip install the driver, e.g. {_driver(parsed)}"
                        ) from None
    except (SQLAlchemyError, OSError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise UserError(f"--storage: cannot open {redact(url)}: {message}",
                        hint="check the URL, the server and the credentials") from None


def _create(url: str, engine_kwargs: dict, heartbeat: float) -> optuna.storages.RDBStorage:
    """Open the storage; retry when another worker is creating the same tables right now."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(  # optuna's types say int; any period works
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat)
        except SQLAlchemyError:
            if attempt == 3:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Use SQLite's write-ahead log with `synchronous=NORMAL`: a commit no longer waits for the
    disk (a killed process still loses nothing committed; only a power cut could), which makes
    a trial's handful of writes about ten times cheaper."""
    from sqlalchemy import event

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()


def _driver(parsed) -> str:
    return {"postgresql": "psycopg2-binary", "mysql": "pymysql"}.get(
        parsed.get_backend_name(), "the database's Python driver")


def redact(url: str) -> str:
    """Return a URL with its password hidden, for messages and pareto.json."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_study(storage: optuna.storages.RDBStorage, name: str, directions: list[str],
               identity: Mapping[str, object]) -> optuna.Study:
    """Create or load a study; refuse one created for another search (`identity` differs).
    The caller sets `study.sampler`."""
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=optuna.samplers.RandomSampler(),
                                load_if_exists=True)
    recorded = study.user_attrs
    if not recorded:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return study
    differs = [k for k, v in identity.items() if k in recorded and recorded[k] != v]
    if differs or [d.name.lower() for d in study.directions] != directions:
        what = ", ".join(f"{k}={recorded.get(k)!r} (now {identity.get(k)!r})" for k in differs)
        raise UserError(f"study '{name}' in this storage was created for another search"
                        + (f": {what}" if what else ""),
                        hint="give another --study or --out, or the same flags as before")
    return study


def finished(trial: FrozenTrial) -> bool:
    """Say whether a trial counts toward `--trials`: complete, pruned, or illegal. Trials a
    killed or interrupted run left behind do not count; they are asked again."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state is TrialState.FAIL and ILLEGAL in trial.user_attrs


def constraints(trial: FrozenTrial) -> list[float]:
    """Return a trial's stored `<= 0` constraint terms (area, accuracy; 0 when not stored)."""
    return list(trial.user_attrs.get(RESULT, {}).get("constraints", [0.0, 0.0]))


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """Return a single-objective study's complete trial with the lowest value among those
    that meet every constraint, or None when none does."""
    best: FrozenTrial | None = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if any(c > 0 for c in constraints(trial)):
            continue
        if best is None or trial.values[0] < best.values[0]:
            best = trial
    return best


def finished_count(study: optuna.Study) -> int:
    """Return how many trials of a study count toward `--trials`."""
    return sum(finished(t) for t in study.get_trials(deepcopy=False))


def heartbeat_period(study: optuna.Study) -> float:
    """Return the seconds between a running trial's heartbeats in the study's storage."""
    return study._storage.get_heartbeat_interval()


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat now and then every heartbeat period until the block ends,
    so that other workers can tell this trial from a killed worker's."""
    from sqlalchemy.exc import SQLAlchemyError

    storage = study._storage  # optuna keeps the storage and trial ids private
    period = heartbeat_period(study)
    trial_id = trial._trial_id
    storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            try:
                storage.record_heartbeat(trial_id)
            except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
                pass  # one missed beat; the trial goes stale only after three

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials of a study whose heartbeat stopped three periods ago (their
    worker was killed or lost), marked `interrupted`; return their numbers. Like optuna's
    `fail_stale_trials`, plus the mark that `count_trials` reads, and a running trial with no
    heartbeat at all (its worker died between creating it and its first beat) gets one now,
    so that it goes stale too."""
    from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
    from sqlalchemy import text

    storage = study._storage
    engine = getattr(storage, "_backend", storage).engine  # optuna caches the RDBStorage
    with engine.connect() as connection:  # killed before their first heartbeat
        silent = connection.execute(text(
            "SELECT t.trial_id FROM trials t WHERE t.study_id = :study AND t.state = 'RUNNING' "
            "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"),
            {"study": study._study_id}).scalars().all()
    for trial_id in silent:  # beat once for them: a live worker's own beats take over
        storage.record_heartbeat(trial_id)
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        try:
            storage.set_trial_user_attr(trial_id, INTERRUPTED, "no heartbeat")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except (UpdateFinishedTrialError, StorageInternalError):
            continue  # another worker failed it first, or its worker told it after all
        failed.append(storage.get_trial_number_from_id(trial_id))
    return failed
