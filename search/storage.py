"""Where trials are kept: an optuna RDB storage (SQLite in `--out` by default, or any URL).

Every trial is written when it finishes, so a killed search loses at most the trials it was
running. A study records what it searches (model, target, data, strategy, objective, budgets)
and the results version of the imcc that created it (`imcc.RESULTS_VERSION`), and refuses to be
resumed with something else: its trials' figures are reused only by the same rules. Several
processes may share one study through a server database (`--storage
postgresql://user@host/db`): each asks the storage for the next trial and stops once the study
holds the requested number of finished trials. Workers that
finish together may overshoot it: a worker asks while fewer are finished, so the study ends
with at most one trial more per extra worker. A running trial's worker records a heartbeat in
the storage every `heartbeat` seconds; a trial silent for three periods belongs to a killed
worker (or a lost machine) and the next worker to look fails it, marked `interrupted`.

A SQLite file is checked before a search writes to it (`PRAGMA quick_check`): a damaged or
empty file is refused, never overwritten or re-initialised, and the message names the file,
its backup and how to start anew; another program's database (tables, but not optuna's) is
refused too, untouched. Once the check passes, the file is copied to `search.db.bak`
(replacing the previous copy), so that a file damaged later can be restored to what it held
when the last run started. A storage that cannot keep trials (an in-memory or read-only
SQLite database) is refused before anything is created (`check_storage`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from imcc import RESULTS_VERSION
from imcc.errors import UserError

STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    optuna.exceptions.StorageInternalError,
    SQLAlchemyError,
    sqlite3.Error,
)
"""What a storage raises when its database fails under a running search (see
`storage_failure`)."""

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database

DATABASE = "search.db"
"""The SQLite file a search keeps its trials in when no `--storage` is given."""

PIPELINE = "pipeline"  # user attribute: the trial's full pipeline string, set when it starts
RESULT = "result"  # user attribute: costs, accuracy, constraints of an evaluated trial
ILLEGAL = "illegal"  # user attribute: why the passes rejected the trial
INTERRUPTED = "interrupted"  # user attribute: Ctrl-C stopped the trial, or its worker died

OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
"""Tables every optuna database has: a SQLite file with tables but not these is not a search's."""

BACKUP_SUFFIX = ".bak"
"""The copy of a SQLite database made each run once it checked clean: `search.db.bak`."""
CREATING_S = 10.0
"""How long an empty database file written less than this long ago is waited for before it is
refused: another worker of the same search may be creating it (SQLite makes the file before
it writes the first page)."""

HEARTBEAT = 10.0
"""Seconds between the heartbeats of a running trial; three missed ones make it stale."""


def storage_url(storage: str | None, out: Path) -> str:
    """Return the storage URL: `--storage` as given, else `sqlite:///OUT/search.db`."""
    if storage is None:
        return f"sqlite:///{(out / DATABASE).resolve()}"
    return storage


def check_storage(url: str) -> Path | None:
    """Refuse a storage URL no search can keep its trials in, before anything is created: an
    unknown scheme, a malformed URL, an in-memory SQLite database (its trials vanish with the
    process) or a read-only one. Return the file a SQLite URL names (None for a server)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    hint = "e.g. sqlite:///search.db or postgresql://user:password@host/database"
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        scheme = url.split(":", 1)[0] if ":" in url else url
        if "://" in url and _known_scheme(scheme):  # a known scheme, the rest is malformed
            raise UserError(f"--storage: malformed database URL {redact(url)}", hint=hint) from None
        raise UserError(f"--storage: unknown database URL scheme '{scheme}'", hint=hint) from None
    if parsed.get_backend_name() != "sqlite":
        return None
    query = {key: _last(value).lower() for key, value in parsed.query.items()}
    database = parsed.database or ""
    if query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = unquote(urlsplit(database).path)  # a SQLite URI filename: file:PATH?...
    if database in ("", ":memory:") or query.get("mode") == "memory":
        raise UserError(
            f"--storage {redact(url)} is an in-memory SQLite database: the search's trials "
            "would vanish when it ends",
            hint="give a file, e.g. --storage sqlite:///search.db, or leave --storage out "
            "(search.db in --out)",
        )
    if query.get("mode") == "ro" or query.get("immutable") in ("1", "true"):
        raise UserError(
            f"--storage {redact(url)} opens the SQLite database read-only: a search must "
            "write its trials",
            hint="drop ?mode=ro (or immutable=1), e.g. --storage sqlite:///search.db",
        )
    return Path(database)


def sqlite_file(url: str) -> Path | None:
    """Return the SQLite file a storage URL names, or None (a server, or a bad URL)."""
    try:
        return check_storage(url)
    except UserError:
        return None


def _last(value: str | tuple[str, ...]) -> str:
    """Return a URL query value (SQLAlchemy gives a tuple for a repeated key: the last wins)."""
    return value[-1] if isinstance(value, tuple) else value


def open_storage(url: str, heartbeat: float = HEARTBEAT) -> optuna.storages.RDBStorage:
    """Open (creating its tables if needed) the database of a SQLAlchemy URL optuna accepts,
    with trial heartbeats every `heartbeat` seconds; a URL `check_storage` refuses, a missing
    driver or an unreachable server is a UserError."""
    from sqlalchemy.engine import make_url

    database = check_storage(url)
    parsed = make_url(url)
    engine_kwargs = {}
    if database is not None:
        check_sqlite(database)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        storage = _create(url, engine_kwargs, heartbeat)
        if database is not None:
            _fast_sqlite(storage)
        return storage
    except ImportError as exc:  # optuna re-raises the driver's ModuleNotFoundError as this
        cause = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        module = getattr(cause, "name", None) or _driver(parsed)
        raise UserError(
            f"--storage: the {parsed.get_backend_name()} driver is not installed ({module})",
            hint=f"pip install the driver, e.g. {_driver(parsed)}",
        ) from None
    except (SQLAlchemyError, OSError, RuntimeError) as exc:  # RuntimeError: optuna's schema
        message = _scrub(" ".join(str(exc).split())[:300], url)
        raise UserError(
            f"--storage: cannot open {redact(url)}: {message}",
            hint="check the URL, the server and the credentials",
        ) from None


def _known_scheme(scheme: str) -> bool:
    """Say whether SQLAlchemy knows a URL scheme (`postgresql`, `sqlite+pysqlite`, ...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(f"{scheme}://").get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return False
    return True


def check_sqlite(path: Path) -> None:
    """Refuse a SQLite database file that is not a sound one, then back it up.

    A missing file is fine (the search creates it); an empty one, a folder, a file SQLite
    cannot read or one whose `PRAGMA quick_check` finds damage is a UserError naming the file
    and saying how to recover. A sound file is copied to FILE.bak through SQLite's backup API
    (consistent even with a live write-ahead log), written beside it and renamed, so a crash
    mid-copy leaves the previous backup whole."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the folder of the search database {path}: {exc.strerror}",
            hint="give another --out or --storage",
        ) from None
    if path.is_dir():
        raise UserError(
            f"the search database {path} is a folder",
            hint="give another --out or --storage sqlite:///FILE",
        )
    if not path.exists():
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise UserError(
            f"cannot read and write the search database {path}",
            hint="check its permissions, or give another --out or --storage",
        )
    wal = path.with_name(path.name + "-wal")

    def empty() -> bool:
        return path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0)

    while empty() and time.time() - path.stat().st_mtime < CREATING_S:
        time.sleep(0.1)  # a worker starting beside this one may be creating it
    if empty():
        # SQLite would silently make a new database of it: whatever it held is lost already,
        # and overwriting it would hide that; the user decides
        raise UserError(
            f"the search database {path} is empty (0 bytes): it holds no trials "
            "and is not a SQLite database",
            hint=_recovery(path, backup),
        )
    with path.open("rb") as handle:
        header = handle.read(16)
    if header and header != SQLITE_HEADER and not backup.exists():
        # someone else's file, not a damaged search: never advise moving it
        raise UserError(
            f"{path} is not a SQLite database, so it cannot hold a search",
            hint="give another --out, or --storage sqlite:///FILE for a new file",
        )
    try:
        with _connect(path) as source:
            rows = source.execute("PRAGMA quick_check").fetchall()
            tables = [
                str(name)
                for (name,) in source.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
    except sqlite3.Error as exc:
        raise UserError(
            f"the search database {path} is damaged: {exc}", hint=_recovery(path, backup)
        ) from None
    if rows != [("ok",)]:
        problem = "; ".join(str(row[0]) for row in rows[:3])
        raise UserError(
            f"the search database {path} is damaged: {problem}", hint=_recovery(path, backup)
        )
    if tables and not OPTUNA_TABLES <= set(tables):
        # another program's database: neither written to nor backed up
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise UserError(
            f"{path} is a SQLite database of another program (tables: {listed}), not a "
            "search's, so it cannot hold a search",
            hint="give another --out, or --storage sqlite:///FILE for a new file",
        )
    _back_up(path, backup)


def _back_up(path: Path, backup: Path) -> None:
    """Copy a checked database to `backup` atomically (workers sharing the file each write
    their own partial copy; the last rename wins, and every copy is whole)."""
    partial = backup.with_name(f"{backup.name}.{os.getpid()}.partial")
    try:
        with _connect(path) as source, _connect(partial) as copy:
            source.backup(copy)
        os.replace(partial, backup)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"cannot back up the search database {path} to {backup}: {exc}",
            hint="free some disk space, or give another --out",
        ) from None


def _connect(path: Path) -> closing[sqlite3.Connection]:
    """A sqlite3 connection closed on leaving the block (sqlite3's own `with` only commits)."""
    return closing(sqlite3.connect(path, timeout=60))


def _recovery(path: Path, backup: Path) -> str:
    """Say how to get going again without losing the damaged file: move it (and the SQLite
    log files beside it, which belong to it) aside, then restore the backup or start anew."""
    companions = [
        p.name
        for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if p.exists()
    ]
    aside = f"mv {path} {path}.damaged" + "".join(
        f" && mv {path.parent / name} {path.parent / name}.damaged" for name in companions
    )
    if backup.exists():
        return (
            f"a copy from the start of the last run is in {backup}: `{aside} && cp "
            f"{backup} {path}` resumes from it; `{aside}` alone starts a new search"
        )
    return f"`{aside}` keeps the old file and lets the next run start a new search"


def storage_failure(url: str, exc: BaseException) -> UserError:
    """Return the UserError for a storage that failed during a search (a SQLite file damaged
    while the search ran, a server gone): what failed, where, and how to recover."""
    message = _scrub(" ".join(str(exc).split())[:300], url)
    path = sqlite_file(url)
    if path is not None:
        return UserError(
            f"the search database {path} failed: {message}",
            hint=_recovery(path, path.with_name(path.name + BACKUP_SUFFIX)),
        )
    return UserError(
        f"--storage {redact(url)} failed during the search: {message}",
        hint="check the server; finished trials are kept, run again to resume",
    )


def _scrub(message: str, url: str) -> str:
    """Hide the URL's password wherever a driver's message repeats it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        password = None
    message = message.replace(url, redact(url))
    return message.replace(str(password), "***") if password else message


def _create(url: str, engine_kwargs: dict, heartbeat: float) -> optuna.storages.RDBStorage:
    """Open the storage; retry when another worker is creating the same tables right now."""
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(  # optuna's types say int; any period works
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat,
                )
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
        parsed.get_backend_name(), "the database's Python driver"
    )


def redact(url: str) -> str:
    """Return a URL with its password hidden, for messages and pareto.json: the user info's
    password (up to the last `@` of the authority, so an unescaped `@` in it is hidden too)
    and a `password=` query parameter."""
    url = re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    directions: list[str],
    identity: Mapping[str, object],
) -> optuna.Study:
    """Create or load a study; refuse one created for another search (`identity` differs) or
    by another results version (`versioned`). The caller sets `study.sampler`."""
    identity = versioned(identity)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=directions,
        sampler=optuna.samplers.RandomSampler(),
        load_if_exists=True,
    )
    recorded = study.user_attrs
    if not recorded:
        # the version first: a worker that opens the study while this one is still writing
        # sees part of the identity, and compares only what is there; without the version
        # key, it would take the study for an earlier imcc's
        for key in sorted(identity, key=lambda k: k != VERSION_KEY):
            study.set_user_attr(key, identity[key])
        return study
    differs = [
        k
        for k, v in identity.items()
        if (k in recorded or k == VERSION_KEY) and recorded.get(k) != v
    ]
    if differs or [d.name.lower() for d in study.directions] != directions:
        raise another_search(name, recorded, identity, differs, "another --study or --out")
    return study


VERSION_KEY = "results_version"
"""The identity key of `imcc.RESULTS_VERSION`: a store without it predates the version and is
another version's (every store compares it, recorded or not)."""


def versioned(identity: Mapping[str, object]) -> dict[str, object]:
    """Return a store's `identity` with the results version of this imcc (`VERSION_KEY`)."""
    return {**identity, VERSION_KEY: RESULTS_VERSION}


def another_search(
    name: str,
    recorded: Mapping[str, object],
    identity: Mapping[str, object],
    differs: list[str],
    instead: str,
    subject: str | None = None,
) -> UserError:
    """Return the refusal of a study created for another search: what `differs` between the
    `recorded` settings and this search's `identity`, and what to give `instead`. `subject`
    names the store (default: the study `name` in the storage)."""
    subject = subject or f"study '{name}' in this storage"
    what = ", ".join(f"{k}={recorded.get(k)!r} (now {identity.get(k)!r})" for k in differs)
    if VERSION_KEY in differs:
        return UserError(
            f"{subject} holds results of another imcc version ({what})",
            hint=f"give {instead}: results computed by other rules are not reused",
        )
    return UserError(
        f"{subject} was created for another search" + (f": {what}" if what else ""),
        hint=f"give {instead}, or the same flags as before",
    )


def finished(trial: FrozenTrial) -> bool:
    """Say whether a trial counts toward `--trials`: complete, pruned, or illegal. Trials a
    killed or interrupted run left behind do not count; they are asked again."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state is TrialState.FAIL and ILLEGAL in trial.user_attrs


def constraints(trial: FrozenTrial) -> list[float]:
    """Return a trial's stored `<= 0` constraint terms (area, accuracy; 0 when not stored)."""
    return list(trial.user_attrs.get(RESULT, {}).get("constraints", [0.0, 0.0]))


def feasible(trial: FrozenTrial) -> bool:
    """Say whether a trial is complete and meets every constraint."""
    return trial.state is TrialState.COMPLETE and all(c <= 0 for c in constraints(trial))


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """Return a single-objective study's complete trial with the lowest value among those
    that meet every constraint (ties: the earlier trial), or None when none does."""
    return next(iter(feasible_by_value(study)), None)


def feasible_by_value(study: optuna.Study) -> list[FrozenTrial]:
    """Return a single-objective study's complete trials that meet every constraint, lowest
    value first (ties: the earlier trial; one pipeline once, its first trial)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted((t for t in trials if feasible(t)), key=lambda t: (t.values[0], t.number))
    seen: set[object] = set()
    unique = []
    for trial in ranked:
        pipeline = trial.user_attrs.get(PIPELINE, trial.number)
        if pipeline not in seen:
            seen.add(pipeline)
            unique.append(trial)
    return unique


def finished_count(study: optuna.Study) -> int:
    """Return how many trials of a study count toward `--trials`."""
    return sum(finished(t) for t in study.get_trials(deepcopy=False))


def stored_trials(storage: optuna.storages.BaseStorage) -> int:
    """Return how many trials (in any state) all the studies of a storage hold."""
    return sum(
        len(storage.get_all_trials(study._study_id, deepcopy=False))
        for study in storage.get_all_studies()
    )


def heartbeat_period(study: optuna.Study) -> float:
    """Return the seconds between a running trial's heartbeats in the study's storage."""
    return study._storage.get_heartbeat_interval()


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat now and then every heartbeat period until the block ends,
    so that other workers can tell this trial from a killed worker's."""
    storage = study._storage  # optuna keeps the storage and trial ids private
    trial_id = trial._trial_id
    storage.record_heartbeat(trial_id)
    with beating(
        heartbeat_period(study),
        lambda: storage.record_heartbeat(trial_id),
        f"heartbeat-{trial.number}",
        (SQLAlchemyError, optuna.exceptions.StorageInternalError),
    ):
        yield


@contextmanager
def beating(
    period: float,
    beat: Callable[[], None],
    name: str,
    missed: tuple[type[BaseException], ...] = (SQLAlchemyError,),
) -> Iterator[None]:
    """Call `beat` every `period` seconds in a thread until the block ends; a beat that fails
    with one of `missed` is skipped (one missed beat; a worker goes stale only after three)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(period):
            try:
                beat()
            except missed:
                pass

    thread = threading.Thread(target=run, name=name, daemon=True)
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
        silent = (
            connection.execute(
                text(
                    "SELECT t.trial_id FROM trials t "
                    "WHERE t.study_id = :study AND t.state = 'RUNNING' AND NOT EXISTS "
                    "(SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
                ),
                {"study": study._study_id},
            )
            .scalars()
            .all()
        )
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
