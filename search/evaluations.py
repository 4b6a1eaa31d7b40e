"""Where the evaluations of a search that names its own trials are kept (the `sensitivity`
strategy: its designs are fixed by the menu, not drawn by a sampler).

An evaluation is keyed by what decides its result (`Evaluator.evaluate`: the accuracy subset's
size, the floor, the single layer and the pipeline) and is deterministic, so it is run once and
read back ever after. Two stores:

- `JsonStore`: a JSON file in `--out` (one process; the file is rewritten whole after each
  evaluation, through a temporary file, so a stop mid-write keeps the previous one), with the
  identity of the search that wrote it: a file of another search is refused.
- `SqlStore`: a table in any SQLAlchemy database (`--storage`: SQLite, or a PostgreSQL server
  that several workers on several machines share). A worker *claims* an evaluation before
  running it: the claim is a row inserted under the evaluation's key, which the database's
  primary key gives to one worker only; the others skip it and take the next one, and come
  back for it at the end (`Evaluator.evaluate(wait=True)`). While it runs, its worker records a
  heartbeat in the row every `heartbeat` seconds; a claim silent for three periods belongs to
  a killed worker (or a lost machine) and the next worker to look takes it over. A worker that
  stops (Ctrl-C) gives its running claim back. A study's identity (model, target, data,
  subsets) is recorded when it is created: a search with other settings under the same study
  name is refused, as for the trial studies (storage.open_study).

Both record the results version of the imcc that ran the evaluations (`imcc.RESULTS_VERSION`,
storage.versioned) with the identity, so evaluations of other rules are never read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from imcc.errors import UserError
from imcc.search.storage import (
    HEARTBEAT,
    STORAGE_ERRORS,
    another_search,
    beating,
    check_storage,
    open_storage,
    redact,
    storage_failure,
    versioned,
)

STALE_BEATS = 3
"""Missed heartbeats after which a claim is taken over (as for trials, storage.py)."""
TABLE = "imcc_evaluations"
STUDIES = "imcc_evaluation_studies"


class JsonStore:
    """Evaluations in a JSON file, for one process (module docstring): `{"identity": ...,
    "evaluations": {key: result}}`; a file written with another identity (or results version,
    or by an imcc that recorded none) is refused when first read."""

    def __init__(self, path: Path, identity: Mapping[str, object]) -> None:
        self.path = path
        self.identity = versioned(identity)
        self._held: dict[str, dict] | None = None

    @classmethod
    def named_by(cls, folder: Path, stem: str, identity: Mapping[str, object]) -> JsonStore:
        """Return the store of `identity` in `folder`: the file is named by the digest of the
        identity and results version (`STEM-DIGEST.json`), so a cache that many settings and
        versions share keeps each one's evaluations apart and never refuses one."""
        text = json.dumps(versioned(identity), sort_keys=True)
        return cls(folder / f"{stem}-{digest(text)[:12]}.json", identity)

    @property
    def label(self) -> str:
        """Where the evaluations are, for pareto.json."""
        return str(self.path)

    def all(self) -> dict[str, dict]:
        """Return every stored evaluation by key (the file is read once)."""
        if self._held is None:
            record = self._read()
            if record is None:
                self._held = {}
            else:
                before = record.get("identity") if "evaluations" in record else None
                if before is None:  # a file without one: an imcc that predates it
                    raise UserError(
                        f"{self.path} holds evaluations without their search's identity "
                        "(written by an earlier imcc)",
                        hint="move it away or give another --out: they are not reused",
                    )
                differs = differing(before, self.identity)
                if differs:
                    raise another_search(
                        str(self.path),
                        before,
                        self.identity,
                        differs,
                        "another --out",
                        subject=f"evaluation store {self.path}",
                    )
                self._held = record["evaluations"]
        return self._held

    def _read(self) -> dict | None:
        """Return the file's record, None when there is no file; a file that is not a JSON
        object (damaged, or another program's) is refused, never overwritten."""
        if not self.path.is_file():
            return None
        try:
            record = json.loads(self.path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            record = exc
        if not isinstance(record, dict):
            raise UserError(
                f"{self.path} is not an evaluation store (not a JSON object: "
                f"{str(record)[:80] if isinstance(record, Exception) else type(record).__name__})",
                hint="move it away or give another --out",
            )
        return record

    def get(self, key: str) -> dict | None:
        """Return the evaluation stored under `key`, or None."""
        return self.all().get(key)

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """One process: an evaluation not stored is always this one's to run."""
        yield True

    def put(self, key: str, result: dict) -> None:
        """Store an evaluation."""
        held = self.all()
        held[key] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"identity": self.identity, "evaluations": held}) + "\n")
        partial.replace(self.path)  # a stop mid-write leaves the previous file

    def close(self) -> None:
        """Nothing to release."""


def differing(recorded: Mapping[str, object], identity: Mapping[str, object]) -> list[str]:
    """Return the keys whose values differ between a store's `recorded` identity and this
    search's (a key only one of them has differs too)."""
    keys = sorted(set(recorded) | set(identity))
    return [k for k in keys if recorded.get(k) != identity.get(k)]


def worker_name() -> str:
    """Return this process's name in the claims it makes: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def digest(key: str) -> str:
    """Return the primary key of an evaluation key (pipelines outgrow index entries)."""
    return hashlib.sha256(key.encode()).hexdigest()


class SqlStore:
    """Evaluations in a database table that several workers share (module docstring)."""

    def __init__(
        self,
        url: str,
        study: str,
        identity: Mapping[str, object],
        heartbeat: float = HEARTBEAT,
        worker: str | None = None,
    ) -> None:
        from sqlalchemy import (
            Column,
            Float,
            MetaData,
            String,
            Table,
            Text,
            create_engine,
        )

        # the database is a search's: optuna's tables beside this one, a SQLite file checked
        # and backed up, an unreachable server or a missing driver refused (storage.py)
        open_storage(url, heartbeat).engine.dispose()
        database = check_storage(url)
        self.url, self.study, self.heartbeat = url, study, heartbeat
        self.worker = worker or worker_name()
        metadata = MetaData()
        self.table = Table(
            TABLE,
            metadata,
            Column("study", String(256), primary_key=True),
            Column("digest", String(64), primary_key=True),
            Column("key", Text, nullable=False),
            Column("worker", String(256), nullable=False),
            Column("heartbeat", Float, nullable=False),
            Column("result", Text),
        )
        self.studies = Table(
            STUDIES,
            metadata,
            Column("study", String(256), primary_key=True),
            Column("identity", Text, nullable=False),
        )
        kwargs = {"connect_args": {"timeout": 60}} if database is not None else {}
        try:
            self.engine = create_engine(url, **kwargs)
            metadata.create_all(self.engine)
            self._check_identity(dict(identity))
        except ImportError as exc:
            raise UserError(
                f"--storage: the driver of {redact(url)} is not installed ({exc.name})",
                hint="pip install the driver, e.g. psycopg2-binary",
            ) from None
        except STORAGE_ERRORS as exc:
            raise storage_failure(url, exc) from None

    @property
    def label(self) -> str:
        """Where the evaluations are, for pareto.json (no password)."""
        return f"{redact(self.url)} ({TABLE}, study {self.study})"

    def _check_identity(self, identity: dict) -> None:
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        identity = versioned(identity)
        text = json.dumps(identity, sort_keys=True)
        try:
            with self.engine.begin() as db:
                db.execute(self.studies.insert().values(study=self.study, identity=text))
            return
        except IntegrityError:
            pass  # the study exists: it must be this search's
        with self.engine.connect() as db:
            recorded = db.execute(
                select(self.studies.c.identity).where(self.studies.c.study == self.study)
            ).scalar_one()
        before = json.loads(recorded)
        differs = differing(before, identity)
        if differs:
            raise another_search(self.study, before, identity, differs, "another --study")

    def all(self) -> dict[str, dict]:
        """Return every finished evaluation of the study by key."""
        from sqlalchemy import select

        t = self.table
        with self.engine.connect() as db:
            rows = db.execute(
                select(t.c.key, t.c.result).where(t.c.study == self.study, t.c.result.isnot(None))
            ).all()
        return {key: json.loads(result) for key, result in rows}

    def get(self, key: str) -> dict | None:
        """Return the evaluation stored under `key`, or None (not run, or running)."""
        from sqlalchemy import select

        t = self.table
        with self.engine.connect() as db:
            result = db.execute(
                select(t.c.result).where(t.c.study == self.study, t.c.digest == digest(key))
            ).scalar_one_or_none()
        return None if result is None else json.loads(result)

    def _take(self, key: str) -> bool:
        """Claim `key` for this worker: insert its row, or take over a stale claim."""
        from sqlalchemy import update
        from sqlalchemy.exc import IntegrityError

        t, now = self.table, time.time()
        row = {"study": self.study, "digest": digest(key), "key": key}
        try:
            with self.engine.begin() as db:
                db.execute(t.insert().values(**row, worker=self.worker, heartbeat=now))
            return True
        except IntegrityError:
            pass
        stale = now - STALE_BEATS * self.heartbeat
        with self.engine.begin() as db:
            taken = db.execute(
                update(t)
                .where(
                    t.c.study == self.study,
                    t.c.digest == row["digest"],
                    t.c.result.is_(None),
                    t.c.heartbeat < stale,
                )
                .values(worker=self.worker, heartbeat=now)
            )
        return taken.rowcount == 1

    def _mine(self, key: str):
        """The where-clause of this worker's open claim on `key`."""
        t = self.table
        return (
            (t.c.study == self.study)
            & (t.c.digest == digest(key))
            & (t.c.worker == self.worker)
            & t.c.result.is_(None)
        )

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Claim `key`; yield whether this worker holds it, beating its heartbeat meanwhile.
        A claim the block leaves without `put` (an error, Ctrl-C) is given back."""
        from sqlalchemy import delete, update
        from sqlalchemy.exc import SQLAlchemyError

        try:
            held = self._take(key)
        except STORAGE_ERRORS as exc:
            raise storage_failure(self.url, exc) from None
        if not held:
            yield False
            return

        def beat() -> None:
            with self.engine.begin() as db:
                db.execute(update(self.table).where(self._mine(key)).values(heartbeat=time.time()))

        try:
            with beating(self.heartbeat, beat, "evaluation-heartbeat"):
                yield True
        finally:
            try:
                with self.engine.begin() as db:  # no-op once put: the result is set
                    db.execute(delete(self.table).where(self._mine(key)))
            except SQLAlchemyError:
                pass  # it goes stale instead

    def put(self, key: str, result: dict) -> None:
        """Store the evaluation of a claim this worker holds."""
        from sqlalchemy import update

        try:
            with self.engine.begin() as db:
                db.execute(
                    update(self.table)
                    .where(self._mine(key))
                    .values(result=json.dumps(result), heartbeat=time.time())
                )
        except STORAGE_ERRORS as exc:
            raise storage_failure(self.url, exc) from None

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()


EvaluationStore = JsonStore | SqlStore
