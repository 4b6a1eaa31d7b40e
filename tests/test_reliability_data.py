"""Hostile input to data sets, `simulate --limit` and the search database: one message (error
and hint), exit 2, no traceback; `--limit N` simulates exactly N samples, reproducibly."""

from __future__ import annotations

import functools
import gc
import json
import os
import sqlite3
import threading
import time
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np
import optuna
import pytest

from imcc.cli import main
from imcc.driver import default_pipeline
from imcc.errors import UserError
from imcc.examples import HERE, example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import parse_pipeline
from imcc.search.storage import CREATING_S, check_sqlite, open_storage, redact
from imcc.simulation import format_simulation, simulate

DIGITS = np.load(HERE / "digits_test.npz")
IMAGES, LABELS = DIGITS["image"], DIGITS["label"]  # [360, 1, 8, 8] float32, [360] int64
SEARCH = [
    "search",
    "digits-cnn",
    "--target",
    "xpert",
    "--data",
    "digits-cnn",
    "--trials",
    "3",
    "--strategy",
    "random",
    "--limit",
    "32",
    "--probe",
    "16",
    "--check",
    "64",
]
"""tests/test_search.py's small search (FAST): it fails on the storage before any trial."""


def one_message(capsys, argv: list[str]) -> str:
    """Run `imcc ARGV`; check exit 2 with one error line, a hint and no traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "\nhint: " in err, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    return err


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("program") / "p.imcir"
    assert main(["compile", "digits-cnn", "--target", "isaac", "-o", str(path)]) == 0
    return path


@functools.cache
def _mapped(target: str):
    hardware = load_target(target)
    ctx = Context(target=hardware, options={"calibration": IMAGES[:64]})
    graph = PassManager(parse_pipeline(default_pipeline(hardware))).run(
        import_onnx(example_path("digits-cnn")), ctx
    )
    return graph, hardware


# -- 1. data sets: every bad file is one message at load ------------------------------------


def _idx(path: Path, magic: bytes, shape: tuple[int, ...], payload: int) -> None:
    sizes = b"".join(n.to_bytes(4, "big") for n in shape)
    path.write_bytes(magic + bytes([len(shape)]) + sizes + bytes(payload))


def _bad_data(tmp: Path, case: str) -> str:
    """Write the broken data set of a case; return its spec."""
    npz = tmp / "data.npz"
    good = (HERE / "digits_test.npz").read_bytes()
    if case == "truncated":
        npz.write_bytes(good[: len(good) // 2])
    elif case == "not a zip":
        npz.write_bytes(b"just some text, not an archive")
    elif case == "corrupt":
        damaged = bytearray(good)
        damaged[len(good) // 2 : len(good) // 2 + 64] = bytes(64)
        npz.write_bytes(bytes(damaged))
    elif case == "empty file":
        npz.write_bytes(b"")
    elif case == "wrong keys":
        np.savez(npz, pixels=IMAGES, classes=LABELS)
    elif case == "2-D labels":
        np.savez(npz, image=IMAGES, label=LABELS[:, None])
    elif case == "short labels":
        np.savez(npz, image=IMAGES, label=LABELS[:10])
    elif case == "negative labels":
        np.savez(npz, image=IMAGES, label=LABELS - 1)
    elif case == "float labels":
        np.savez(npz, image=IMAGES, label=LABELS + 0.5)
    elif case == "string images":
        np.savez(npz, image=np.full(len(LABELS), "x"), label=LABELS)
    elif case == "nan images":
        np.savez(npz, image=np.where(IMAGES > 0.5, np.nan, IMAGES), label=LABELS)
    elif case == "no samples":
        np.savez(npz, image=IMAGES[:0], label=LABELS[:0])
    elif case == "scalar images":
        np.savez(npz, image=np.float32(1), label=LABELS)
    elif case.startswith("idx"):
        folder = tmp / "mnist"
        folder.mkdir()
        _idx(folder / "t10k-labels-idx1-ubyte", b"\0\0\x08", (10,), 10)
        if case == "idx truncated":
            _idx(folder / "t10k-images-idx3-ubyte", b"\0\0\x08", (10, 28, 28), 100)
        elif case == "idx bad magic":
            _idx(folder / "t10k-images-idx3-ubyte", b"\x12\x34\x56", (10, 28, 28), 7840)
        else:
            (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip data")
        return f"mnist:{folder}"
    elif case == "no folder":
        return f"fashion-mnist:{tmp / 'nowhere'}"
    return f"npz:{npz}"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "data.npz is a damaged or truncated .npz archive"),
        ("not a zip", "data.npz is not an .npz archive"),
        ("corrupt", "data.npz is damaged: array 'image' cannot be read"),
        ("empty file", "data.npz is empty (0 bytes)"),
        ("wrong keys", "data.npz has no array `image` (or `x`)"),
        ("2-D labels", "labels have shape [360, 1], the images need one label each: [360]"),
        ("short labels", "labels have shape [10], the images need one label each: [360]"),
        ("negative labels", "labels must be class numbers >= 0, found -1"),
        ("float labels", "labels are float64, not integers"),
        ("string images", "images are <U1, not numbers"),
        ("nan images", "image values are NaN or infinite (the first in sample 0)"),
        ("no samples", "holds no samples"),
        ("scalar images", "images have shape [], not [N, ...]"),
        ("idx truncated", "header says (10, 28, 28) (7840 bytes), file holds 100 bytes"),
        ("idx bad magic", "is not an IDX file of unsigned bytes (magic 12345603"),
        ("idx broken gzip", "cannot read"),
        ("no folder", "nowhere does not exist"),
    ],
)
def test_bad_data_sets_are_one_message(tmp_path: Path, case: str, message: str) -> None:
    spec = _bad_data(tmp_path, case)
    with pytest.raises(UserError) as caught:
        load_dataset(spec)
    assert message in str(caught.value) and caught.value.hint
    with pytest.raises(UserError):  # whatever the limit, the same check
        load_dataset(spec, 8)


def test_bad_data_on_the_command_line(capsys, tmp_path: Path, program: Path) -> None:
    for case, message in [
        ("corrupt", "is damaged: array"),
        ("wrong keys", "arrays in the file: pixels, classes"),
    ]:
        spec = _bad_data(tmp_path, case)
        assert message in one_message(capsys, ["simulate", program, "--data", spec])
    assert "'nan' is not a positive number" in one_message(
        capsys, ["simulate", program, "--data", "digits-cnn,scale=nan"]
    )


def test_labels_beyond_the_models_classes_are_refused(
    capsys, tmp_path: Path, program: Path
) -> None:
    np.savez(tmp_path / "d.npz", image=IMAGES, label=LABELS + 5)  # up to 14, digits-cnn has 10
    err = one_message(
        capsys, ["simulate", program, "--data", f"npz:{tmp_path / 'd.npz'}", "--limit", "16"]
    )
    assert "labels go up to 14, but the model has 10 outputs (classes 0..9)" in err


def test_images_of_another_dtype_or_shape_are_one_message(
    capsys, tmp_path: Path, program: Path
) -> None:
    spec = f"npz:{tmp_path / 'd.npz'}"
    np.savez(tmp_path / "d.npz", image=IMAGES.astype(np.complex64), label=LABELS)
    err = one_message(capsys, ["simulate", program, "--data", spec])  # not cast silently
    assert "images are complex64, not numbers" in err
    np.savez(tmp_path / "d.npz", image=IMAGES.reshape(360, 64), label=LABELS)
    err = one_message(capsys, ["simulate", program, "--data", spec])
    assert "data samples are [64], the model's input %image takes [1, 8, 8]" in err


# -- 2. simulate --limit: exactly N samples, the first ones unchanged ------------------------


def test_limit_runs_exactly_n_samples_with_a_partial_last_batch() -> None:
    program, hardware = _mapped("sotmtj")  # MTJ converters: the seeded draws matter
    data = load_dataset("digits-cnn")
    hundred = simulate(program, hardware, data.take(100), batch=64, seed=5)
    first = simulate(program, hardware, data.take(64), batch=64, seed=5)
    assert hundred.samples == 100 and len(hundred.predictions) == 100
    assert hundred.predictions[:64] == first.predictions
    assert hundred.layers[0].mtj_samples > first.layers[0].mtj_samples > 0
    assert simulate(program, hardware, data.take(100), batch=64, seed=5) == hundred


def test_limit_on_the_command_line(capsys, program: Path) -> None:
    assert (
        main(
            [
                "simulate",
                str(program),
                "--data",
                "digits-cnn",
                "--limit",
                "100",
                "--batch",
                "64",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["samples"] == 100
    assert main(["simulate", str(program), "--data", "digits-cnn", "--limit", "1000"]) == 0
    out = capsys.readouterr().out  # the data set has 360: all are used, and said so
    assert out.startswith(
        "simulate: 360 samples of digits-cnn (all of them; --limit asked for 1000), seed 0\n"
    )
    for flag, value in [("--limit", "-5"), ("--limit", "0"), ("--batch", "0")]:
        err = one_message(capsys, ["simulate", program, "--data", "digits-cnn", flag, value])
        assert flag.strip("-") in err and value in err  # the CLI may check first, or we do


def test_limit_and_batch_below_one_are_refused() -> None:
    for limit in (-5, 0):
        with pytest.raises(UserError, match=f"the sample limit must be at least 1, not {limit}"):
            load_dataset("digits-cnn", limit)
        with pytest.raises(UserError, match="the sample limit must be at least 1"):
            load_dataset("digits-cnn").take(limit)
    program, hardware = _mapped("isaac")
    for batch in (0, -64):
        with pytest.raises(
            UserError, match=f"the simulation batch must be at least 1, not {batch}"
        ):
            simulate(program, hardware, load_dataset("digits-cnn", 8), batch=batch)


def test_limit_beyond_the_data_is_reported() -> None:
    program, hardware = _mapped("isaac")
    report = simulate(program, hardware, load_dataset("digits-cnn", 500), batch=128)
    assert report.samples == 360 and report.limit == 500 and report.to_dict()["limit"] == 500
    assert "(all of them; --limit asked for 500)" in format_simulation(report)


# -- 3. the search database ------------------------------------------------------------------


def _storage_with_trials(path: Path) -> None:
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{path}"))
    for value in range(3):
        study.add_trial(optuna.trial.create_trial(value=float(value)))


def test_damaged_database_is_refused_and_the_backup_named(capsys, tmp_path: Path) -> None:
    database = tmp_path / "search.db"
    _storage_with_trials(database)
    open_storage(f"sqlite:///{database}")  # a second run: checked clean, so backed up
    gc.collect()  # the storages above close their connections now, not while the test reads
    backup = tmp_path / "search.db.bak"
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{backup}").trials) == 3
    damaged = bytearray(database.read_bytes())
    page = (len(damaged) // 4096 // 2) * 4096  # a whole page in the middle of the file
    damaged[page : page + 4096] = b"\xde\xad\xbe\xef" * 1024
    database.write_bytes(bytes(damaged))
    err = one_message(capsys, [*SEARCH, "--out", tmp_path])
    assert err.startswith(f"error: the search database {database} is damaged: ")
    assert f"{backup}" in err and f"mv {database} {database}.damaged" in err
    assert database.read_bytes() == bytes(damaged)  # neither repaired nor overwritten
    with sqlite3.connect(backup) as connection:  # the backup is kept as it was
        assert connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]


def test_empty_database_is_refused_not_reinitialised(capsys, tmp_path: Path) -> None:
    (tmp_path / "search.db").write_bytes(b"")
    stale = time.time() - 2 * CREATING_S  # not one another worker is creating
    os.utime(tmp_path / "search.db", (stale, stale))
    err = one_message(capsys, [*SEARCH, "--out", tmp_path])
    assert f"the search database {tmp_path / 'search.db'} is empty (0 bytes)" in err
    assert (tmp_path / "search.db").stat().st_size == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://user:s3cret@host:notaport/db", "postgresql://user:***@host:notaport/db"),
        ("postgresql://user:s3cret@127.0.0.1:1/db", "--storage: "),  # no driver, or no server
        ("sqlite:///{tmp}/file/search.db", "cannot create the folder of the search database"),
        ("sqlite:///{tmp}/file", "is not a SQLite database"),
    ],
)
def test_bad_storage_urls_are_one_message_without_the_password(
    capsys, tmp_path: Path, url: str, message: str
) -> None:
    (tmp_path / "file").write_text("not a database\n")
    err = one_message(
        capsys, [*SEARCH, "--out", tmp_path / "out", "--storage", url.format(tmp=tmp_path)]
    )
    assert message in err and "s3cret" not in err


def test_redact_hides_passwords_with_at_signs_and_in_the_query() -> None:
    assert redact("postgresql://u:pa@ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert (
        redact("postgresql://u@h/db?password=x&ssl=1") == "postgresql://u@h/db?password=***&ssl=1"
    )


def test_database_failing_during_the_search_is_one_message(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    import imcc.search.run as run

    def broken(*_args: object, **_kwargs: object) -> None:
        raise optuna.exceptions.StorageInternalError("database disk image is malformed")

    monkeypatch.setattr(run, "_run_phases", broken)  # as if the file broke under the trials
    database = tmp_path / "search.db"
    _storage_with_trials(database)  # it holds trials: kept, and the advice names it
    err = one_message(capsys, [*SEARCH, "--out", tmp_path])
    assert database.exists()
    assert err.startswith(
        f"error: the search database {database} failed: database disk image is malformed\n"
    )
    assert f"mv {database} {database}.damaged" in err


# -- 4. sweep A: flags, specs and files that were accepted, or refused untidily -------------

SMALL = [
    "search",
    "digits-cnn",
    "--target",
    "isaac",
    "--data",
    "digits-cnn",
    "--trials",
    "2",
    "--limit",
    "16",
    "--probe",
    "8",
    "--check",
    "16",
    "--random-trials",
    "0",
]
"""The smallest search: every case below is refused before its first trial."""

FINETUNE = ["finetune", "digits-cnn", "--target", "sotmtj", "--data", "digits", "--epochs", "0"]


def test_finetune_sim_batch_below_one_is_refused(capsys, tmp_path: Path) -> None:
    """A5: --sim-batch 0 was `max() arg is an empty sequence`, a traceback."""
    out = tmp_path / "ft" / "p.onnx"
    argv = [*FINETUNE, "--train", "64", "--holdout", "32", "--sim-batch", "0", "-o", out]
    err = one_message(capsys, argv)
    assert "finetune: --sim-batch must be at least 1, not 0" in err
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train", "64", "--clip", "-1"], "finetune: --clip must be >= 0 (0: unclipped), not -1"),
        (["--train", "64", "--surrogate-ramp", "2"], "--surrogate-ramp must be between 0 and 1"),
        (["--train", "64", "--lr", "nan"], "finetune: --lr must be > 0, not nan"),
        (["--train", "0"], "finetune: --train must be at least 1, not 0"),
    ],
)
def test_finetune_flags_are_named_with_their_value(
    capsys, tmp_path: Path, flags: list[str], message: str
) -> None:
    """C5: one generic message for every training flag; --train 0 'did not fit' the data."""
    err = one_message(capsys, [*FINETUNE, "--holdout", "32", *flags, "-o", tmp_path / "x.onnx"])
    assert message in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trials", "0"], "error: --trials must be at least 1, not 0\n"),
        (["--limit", "0"], "error: --limit must be at least 1, not 0\n"),
        (["--probe", "0"], "error: --probe must be at least 1, not 0\n"),
        (["--check", "0"], "error: --check must be at least 1, not 0\n"),
        (["--random-trials", "-1"], "error: --random-trials must be 0 or more, not -1\n"),
    ],
)
def test_search_counts_below_one_have_a_hint(
    capsys, tmp_path: Path, flags: list[str], message: str
) -> None:
    """C3: these were refused without a hint (and must leave no --out folder)."""
    out = tmp_path / "out"
    err = one_message(capsys, [*SMALL, *flags, "--out", out])
    assert err.startswith(message)
    assert not out.exists()


def _labels_beyond_the_classes(tmp: Path) -> str:
    np.savez(tmp / "d.npz", image=IMAGES, label=LABELS + 5)
    return f"npz:{tmp / 'd.npz'}"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("storage", "unknown database URL scheme 'nonsense'"),
        ("data", "unknown data set 'svhn:x'"),
        ("labels", "labels go up to 14, but the model has 10 outputs"),
        ("trials", "--trials must be at least 1, not 0"),
    ],
)
def test_a_search_refused_at_start_leaves_nothing(
    capsys, tmp_path: Path, case: str, message: str
) -> None:
    """B7: a rejected search left its (empty) --out folder, or a search.db in it."""
    out = tmp_path / "o" / "out"
    flags = {
        "storage": ["--storage", "nonsense"],
        "data": ["--data", "svhn:x"],
        "labels": ["--data", _labels_beyond_the_classes(tmp_path)],
        "trials": ["--trials", "0"],
    }[case]
    err = one_message(capsys, [*SMALL, *flags, "--out", out])
    assert message in err
    assert not (tmp_path / "o").exists()


def test_a_database_this_search_made_is_removed_when_it_fails_before_a_trial(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    """B7: the database a failed search created, with no trial in it, and its folders go;
    the message does not advise moving a file that is gone."""
    import imcc.search.run as run

    def broken(*_args: object, **_kwargs: object) -> None:
        raise optuna.exceptions.StorageInternalError("disk I/O error")

    monkeypatch.setattr(run, "_run_phases", broken)
    out = tmp_path / "o" / "out"
    err = one_message(capsys, [*SMALL, "--out", out])
    assert f"error: the search database {out / 'search.db'} failed: disk I/O error" in err
    assert "held no trial yet, so it was removed" in err and ".damaged" not in err
    assert not (tmp_path / "o").exists()


def test_another_programs_sqlite_file_is_refused_untouched(capsys, tmp_path: Path) -> None:
    """B7/C4: a valid SQLite file without optuna's tables was backed up, then failed with
    SQLAlchemy's generic commit error."""
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as connection:
        connection.execute("create table studies(x)")
        connection.commit()
    before = other.read_bytes()
    err = one_message(
        capsys, [*SMALL, "--out", tmp_path / "out", "--storage", f"sqlite:///{other}"]
    )
    assert f"{other} is a SQLite database of another program (tables: studies)" in err
    assert other.read_bytes() == before
    assert not (tmp_path / "other.db.bak").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "is an in-memory SQLite database"),
        ("sqlite:///:memory:", "is an in-memory SQLite database"),
        ("sqlite:///{tmp}/ro.db?mode=ro", "opens the SQLite database read-only"),
    ],
)
def test_storage_that_cannot_keep_trials_is_refused(
    capsys, tmp_path: Path, url: str, message: str
) -> None:
    """C4: in-memory storage failed with SQLAlchemy's generic commit error (or a traceback);
    ?mode=ro printed an SAWarning and ran."""
    err = one_message(
        capsys, [*SMALL, "--out", tmp_path / "out", "--storage", url.format(tmp=tmp_path)]
    )
    assert message in err and "SAWarning" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ro.db").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("digits,scale=", "bad scale in data set 'digits,scale=': ,scale= gives no number"),
        ("digits:", "data set 'digits:': digits is built in and takes no path"),
        ("digits-cnn:", "digits-cnn is a built-in example's data and takes no path"),
        ("mnist:", "data set 'mnist:': mnist needs a folder, mnist:DIR"),
        ("npz:,scale=2", "data set 'npz:': npz needs a file, npz:FILE"),
        ("digits,from=", "bad start in data set 'digits,from=': ,from= is not a whole number"),
        ("digits,from=-3", ",from=-3 is not a whole number >= 0"),
        ("digits,from=1797", "bad start in data set 'digits,from=1797': ,from=1797 is beyond"),
        ("digits,from=1,scale=2,from=2", "data set 'digits,from=1,scale=2,from=2': ,from= is"),
    ],
)
def test_malformed_data_specs_are_refused(capsys, program: Path, spec: str, message: str) -> None:
    """B9: an empty scale and a path given to `digits` were read as plain `digits`."""
    with pytest.raises(UserError) as caught:
        load_dataset(spec)
    assert message in str(caught.value) and caught.value.hint
    assert message in one_message(capsys, ["simulate", program, "--data", spec, "--limit", "4"])


def test_a_spec_can_start_at_a_sample_and_scale_in_either_order() -> None:
    """`,from=N` starts the data set at sample N (one file, several splits); a limit counts
    from there; the suffixes combine in any order."""
    whole = load_dataset("digits")
    part = load_dataset("digits,from=1700", 50)
    assert np.array_equal(part.images, whole.images[1700:1750])
    assert np.array_equal(part.labels, whole.labels[1700:1750])
    tail = load_dataset("digits,from=1790")
    assert len(tail.images) == 7
    for spec in ("digits,from=1790,scale=2", "digits,scale=2,from=1790"):
        assert np.array_equal(load_dataset(spec).images, 2 * whole.images[1790:])


def test_a_start_does_not_hide_labels_that_do_not_match_the_images(tmp_path: Path) -> None:
    """100 images with 50 labels are refused with or without ,from=50 (cut alike, they would
    pair images 50-99 with labels 0-49)."""
    path = tmp_path / "d.npz"
    np.savez(path, image=np.zeros((100, 1, 4, 4), np.float32), label=np.zeros(50, np.int64))
    for spec in (f"npz:{path}", f"npz:{path},from=50"):
        with pytest.raises(UserError, match="need one label each"):
            load_dataset(spec)


def test_images_beyond_float32_are_one_message_without_a_warning(
    capsys, tmp_path: Path, program: Path
) -> None:
    """C1: float64 images of 1e300 printed numpy's overflow RuntimeWarning before the error."""
    np.savez(tmp_path / "d.npz", image=np.full(IMAGES.shape, 1e300), label=LABELS)
    spec = f"npz:{tmp_path / 'd.npz'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the test
        with pytest.raises(UserError, match="beyond float32's range"):
            load_dataset(spec, 8)
    err = one_message(capsys, ["simulate", program, "--data", spec, "--limit", "8"])
    assert "512 image values are beyond float32's range (up to 1e+300" in err
    assert "Warning" not in err


def test_uint64_labels_beyond_int64_show_their_real_value(
    capsys, tmp_path: Path, program: Path
) -> None:
    """C2: a uint64 label of 2**64-1 said 'found 0' (the smallest label, not the bad one)."""
    labels = LABELS.astype(np.uint64)
    labels[3] = np.uint64(2**64 - 1)
    np.savez(tmp_path / "d.npz", image=IMAGES, label=labels)
    err = one_message(
        capsys, ["simulate", program, "--data", f"npz:{tmp_path / 'd.npz'}", "--limit", "8"]
    )
    assert "label 18446744073709551615 is no class number" in err
    assert "sample 3" in err and "found 0" not in err


def test_an_empty_database_another_worker_is_creating_is_waited_for(tmp_path: Path) -> None:
    """Two workers started together on one SQLite file: the second may find the file the first
    has made but not yet written. A fresh empty file is waited for, not refused (nor removed)."""
    database = tmp_path / "shared.db"
    database.write_bytes(b"")

    def create() -> None:  # the other worker writes its first page
        with closing(sqlite3.connect(database)) as connection:
            connection.execute("CREATE TABLE studies (study_id INTEGER)")
            connection.execute("CREATE TABLE trials (trial_id INTEGER)")
            connection.execute("CREATE TABLE version_info (version TEXT)")
            connection.commit()

    timer = threading.Timer(0.5, create)
    timer.start()
    check_sqlite(database)
    timer.join()
    assert database.stat().st_size > 0
