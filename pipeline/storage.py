"""The storage layout of DESIGN.md and atomic, idempotent partition writes.

Layout under ``JOBREC_HOME`` (every path comes from a :class:`Layout` method; no module builds one by hand)::

    raw/{members,jobs,impressions,applies}/ds=YYYY-MM-DD/*.parquet
    truth/impressions/ds=YYYY-MM-DD/, truth/summary.json  (synthetic data only: true apply probabilities)
    quarantine/<table>/ds=YYYY-MM-DD/
    validated/<table>/ds=YYYY-MM-DD/                   the rows that passed validation
    validated/_reports/ds=YYYY-MM-DD.json              the verdict of the day's last validation (pass or not)
    features/vocab/ds=YYYY-MM-DD/
    features/{training,member_profiles,job_profiles}/ds=YYYY-MM-DD/
    models/full/<version>/, models/daily/ds=YYYY-MM-DD/, models/current.json (the promoted full model)
    models/lr_cosine/weights.json                      the first stage's field weights
    index/jobs/ds=YYYY-MM-DD/
    candidates/ds=YYYY-MM-DD/, recommendations/ds=YYYY-MM-DD/
    reports/ds=YYYY-MM-DD/{run.json,full_retrain.json,index.html}, reports/index.html (pages across days)
    airflow/ (the embedded Airflow home), logs/ (demo logs); redis/ (the embedded serving store, placed by
    serving_store.connection under the same home)

Every partition is written to a hidden temporary sibling and renamed into place, so readers see either the
old partition or the new one, and re-running a day replaces that day's partition and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RAW_TABLES = ("members", "jobs", "impressions", "applies")


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is a valid ``YYYY-MM-DD`` date, else raise ``ValueError`` saying what to pass."""
    try:
        dt.date.fromisoformat(ds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ds must be a date as YYYY-MM-DD; got {ds!r}") from exc
    if len(ds) != 10:
        raise ValueError(f"ds must be a date as YYYY-MM-DD; got {ds!r}")
    return ds


def shift_ds(ds: str, days: int) -> str:
    """The date ``days`` after ``ds`` (negative for before), as YYYY-MM-DD."""
    return (dt.date.fromisoformat(check_ds(ds)) + dt.timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class Layout:
    """Paths of every dataset under one root folder. Pure path arithmetic: nothing is created here."""

    home: Path

    def raw(self, table: str, ds: str) -> Path:
        return self.raw_dir(table) / f"ds={check_ds(ds)}"

    def raw_dir(self, table: str | None = None) -> Path:
        """``raw/`` or, with ``table``, the folder of that table's ``ds=`` partitions."""
        return self.home / "raw" / table if table else self.home / "raw"

    def truth(self, ds: str) -> Path:
        return self.home / "truth" / "impressions" / f"ds={check_ds(ds)}"

    def truth_summary(self) -> Path:
        """``truth/summary.json``: the synthetic generator's parameters and per-day counts."""
        return self.home / "truth" / "summary.json"

    def quarantine(self, table: str, ds: str) -> Path:
        return self.quarantine_dir() / table / f"ds={check_ds(ds)}"

    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    def validated(self, table: str, ds: str) -> Path:
        """The rows of raw ``table`` for ``ds`` that passed validation (``jobrec validate``)."""
        return self.home / "validated" / table / f"ds={check_ds(ds)}"

    def validation_report(self, ds: str) -> Path:
        """The verdict of the last ``jobrec validate`` of ``ds`` (``ok`` true only for a pass)."""
        return self.home / "validated" / "_reports" / f"ds={check_ds(ds)}.json"

    def features(self, kind: str, ds: str) -> Path:
        """``kind`` is one of training, member_profiles, job_profiles, vocab."""
        return self.home / "features" / kind / f"ds={check_ds(ds)}"

    def models_dir(self) -> Path:
        return self.home / "models"

    def full_models_dir(self) -> Path:
        """The folder of every full model (``models/full/<version>``)."""
        return self.models_dir() / "full"

    def daily_models_dir(self) -> Path:
        """The folder of every daily model (``models/daily/ds=``)."""
        return self.models_dir() / "daily"

    def model_full(self, version: str) -> Path:
        return self.full_models_dir() / version

    def model_daily(self, ds: str) -> Path:
        return self.daily_models_dir() / f"ds={check_ds(ds)}"

    def model_pointer(self) -> Path:
        """``models/current.json``: the promoted full model."""
        return self.models_dir() / "current.json"

    def field_weights(self) -> Path:
        """``models/lr_cosine/weights.json``: the first stage's LR-Cosine field weights."""
        return self.models_dir() / "lr_cosine" / "weights.json"

    def index(self, ds: str) -> Path:
        return self.home / "index" / "jobs" / f"ds={check_ds(ds)}"

    def candidates(self, ds: str) -> Path:
        return self.home / "candidates" / f"ds={check_ds(ds)}"

    def recommendations(self, ds: str) -> Path:
        return self.home / "recommendations" / f"ds={check_ds(ds)}"

    def report(self, ds: str) -> Path:
        return self.reports_dir() / f"ds={check_ds(ds)}" / "run.json"

    def reports_dir(self) -> Path:
        """``reports/``: each day's ``ds=`` folder (run.json, full_retrain.json, index.html) and the
        across-days page ``reports/index.html`` (served read-only by ``jobrec serve`` at ``/reports/``)."""
        return self.home / "reports"

    def airflow_home(self) -> Path:
        """The embedded Airflow home (metadata DB, ``airflow.cfg``, task logs)."""
        return self.home / "airflow"

    def logs_dir(self) -> Path:
        """Log files of ``jobrec demo``."""
        return self.home / "logs"

    def scratch_dir(self) -> Path:
        """Temporary files a step removes when done (e.g. the training rows a Spark fit reads); inside the
        data folder, so a Spark cluster that shares it can read them."""
        return self.home / ".scratch"

    def partitions(self, parent: Path) -> list[str]:
        """Sorted ``ds`` values of the complete ``ds=`` partitions directly under ``parent``."""
        if not parent.is_dir():
            return []
        return sorted(p.name[3:] for p in parent.iterdir() if p.is_dir() and p.name.startswith("ds="))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` whole, on error it is removed.

    The swap is two renames on the same filesystem (old → trash, temp → target), so a reader never sees
    a half-written directory and a failed writer leaves the previous ``target`` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trash = None
    if target.exists():
        trash = target.parent / f".trash-{target.name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
    os.replace(tmp, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove_directory(target: Path) -> bool:
    """Remove the folder ``target`` atomically: it is renamed away first, then deleted, so a reader sees the
    whole folder or none of it. Returns whether there was a folder to remove."""
    target = Path(target)
    if not target.exists():
        return False
    trash = target.parent / f".trash-{target.name}-{uuid.uuid4().hex[:8]}"
    os.replace(target, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


LANDED_MARKER = "_SUCCESS"


def write_partition(
    target: Path, table: pa.Table, *, name: str = "part-00000.parquet", landed_marker: bool = False
) -> Path:
    """Atomically replace the partition folder ``target`` with one Parquet file holding ``table``.

    ``landed_marker`` also writes the empty ``_SUCCESS`` file that marks a raw partition as completely landed
    (what the daily DAG's sensor waits for); it appears together with the data, in the same rename.
    """
    with atomic_directory(target) as tmp:
        pq.write_table(table, tmp / name, compression="zstd")
        if landed_marker:
            (tmp / LANDED_MARKER).touch()
    return target


READ_ATTEMPTS = 3
T = TypeVar("T")


def read_partition(target: Path, *, columns: list[str] | None = None) -> pa.Table:
    """Read every Parquet file of a partition folder (or one file) into one table, all of one version.

    A writer may replace the partition while it is read (:func:`atomic_directory`: a rerun of the day's
    features while the weekly retrain reads its window). The table then never mixes files of the old version
    with files of the new one: when the folder was swapped during the read (its inode changed), it is read
    again, up to ``READ_ATTEMPTS`` times. Raises ``FileNotFoundError`` naming the path when the partition does
    not exist, and ``RuntimeError`` when it kept changing.
    """
    tables = _each_file_of_one_version(Path(target), lambda f: pq.read_table(f, columns=columns), "read")
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def _each_file_of_one_version(target: Path, use: Callable[[Path], T], doing: str,
                              discard: Callable[[list[T]], None] = lambda done: None) -> list[T]:
    """``[use(f) for f in partition_files(target)]``, every ``f`` of one version of the folder: when it was
    swapped meanwhile (its inode changed, or a listed file went away), ``discard`` what was done and start
    again, up to ``READ_ATTEMPTS`` times. The one retry loop behind :func:`read_partition`,
    :func:`open_partition` and :func:`pinned_partition`. Raises ``FileNotFoundError`` naming the path when the
    partition does not exist, ``RuntimeError`` (saying what was ``doing``) when it kept changing; any other
    error of ``use`` discards what was done and propagates."""
    for _ in range(READ_ATTEMPTS):
        before = _identity(target)
        done: list[T] = []
        try:
            for f in partition_files(target):
                done.append(use(f))
        except FileNotFoundError:
            discard(done)
            if before is None or _identity(target) == before:
                raise  # missing, not swapped: the message names the path
            continue  # the old version's files were removed under the reader
        except BaseException:
            discard(done)
            raise
        if _identity(target) == before:
            return done
        discard(done)
    raise RuntimeError(f"{target} was replaced {READ_ATTEMPTS} times while being {doing}; try again")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, which a rename over it changes; ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def open_partition(target: Path, *, read_dictionary: list[str] | None = None) -> list[pq.ParquetFile]:
    """Open every Parquet file of a partition folder (or the one file), all of one version, for streaming.

    The open files go on reading the version they belong to when a writer replaces the folder afterwards
    (:func:`atomic_directory` removes the old files; an open file keeps its data until it is closed), so a
    reader streaming a day file by file never mixes two versions. A swap between listing the files and
    opening them (the folder's inode changed, or a listed file is gone) opens the new version instead, up
    to ``READ_ATTEMPTS`` times. ``read_dictionary``: columns read dictionary-encoded. The caller closes the
    files (:func:`closing_all`). Raises ``FileNotFoundError`` naming the path when the partition does not
    exist, ``RuntimeError`` when it kept changing.
    """
    return _each_file_of_one_version(
        Path(target), lambda f: pq.ParquetFile(pa.OSFile(str(f), "r"), read_dictionary=read_dictionary),
        "opened", _close,
    )


@contextlib.contextmanager
def pinned_partition(target: Path, scratch: Path) -> Iterator[Path]:
    """A private snapshot of a partition folder for readers that open its files by path (Spark tasks, forked
    workers): a folder under ``scratch`` holding hard links to the files of one version, removed on exit.

    A rerun that replaces ``target`` meanwhile (:func:`atomic_directory`) removes the old files from
    ``target`` only; the links keep them, so the whole read sees one version. Linking copies nothing
    (``scratch`` must be on the same file system: the data folder's ``.scratch``). A swap while linking
    links the new version instead, up to ``READ_ATTEMPTS`` times. Where hard links are not possible, yields
    ``target`` itself (a warning says the read is not pinned). Raises ``FileNotFoundError`` naming the path
    when the partition does not exist.
    """
    import logging
    import tempfile

    target = Path(target)
    scratch.mkdir(parents=True, exist_ok=True)
    name = f"{target.parent.name}-{target.name}".replace("=", "-")  # no "k=v": Spark would read a partition column
    snapshot = Path(tempfile.mkdtemp(prefix=f".pinned-{name}-", dir=scratch))
    try:
        pinned = snapshot
        try:
            _link_one_version(target, snapshot)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno not in _NO_HARD_LINKS:
                raise
            logging.getLogger(__name__).warning(
                "cannot hard-link %s into %s (%s): reading it in place, not pinned to one version", target,
                scratch, exc,
            )
            pinned = target
        yield pinned
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


# os.link's errors that mean "no hard links here" (another file system, or one without them).
_NO_HARD_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP)


def _link_one_version(target: Path, snapshot: Path) -> None:
    def link(f: Path) -> Path:
        os.link(f, snapshot / f.name)
        return snapshot / f.name

    def unlink(linked: list[Path]) -> None:
        for path in linked:
            path.unlink()

    _each_file_of_one_version(target, link, "linked", unlink)


def _close(files: list[pq.ParquetFile]) -> None:
    for f in files:
        f.close(force=True)


@contextlib.contextmanager
def closing_all(files: list[pq.ParquetFile]) -> Iterator[list[pq.ParquetFile]]:
    """``files`` (from :func:`open_partition`), closed when the block ends."""
    try:
        yield files
    finally:
        _close(files)


def record_batches(target: Path, columns: list[str], *, batch_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """``columns`` of a partition folder (or file) as Arrow record batches of up to ``batch_rows`` rows, in
    file order, all from one version (:func:`open_partition`): the memory of one batch whatever the
    partition's size (a 1M-member day's candidates hold 10^9 rows). Raises ``FileNotFoundError`` naming the
    path when the partition does not exist."""
    with closing_all(open_partition(target)) as files:
        for f in files:
            yield from f.iter_batches(batch_size=batch_rows, columns=columns)


def column_batches(target: Path, column: str, *, batch_rows: int = 1 << 20) -> Iterator[np.ndarray]:
    """One column of a partition folder (or file), batch by batch in file order, as NumPy arrays
    (:func:`record_batches`)."""
    for batch in record_batches(target, [column], batch_rows=batch_rows):
        yield batch.column(0).to_numpy(zero_copy_only=False)


def partition_files(target: Path) -> list[Path]:
    """The Parquet files of a partition folder in name order (hidden and ``_``-prefixed ones skipped), or
    ``[target]`` for a file. Raises ``FileNotFoundError`` naming the path when there is none."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"partition not found: {target}")
    if target.is_file():
        return [target]
    files = sorted(p for p in target.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"partition has no Parquet files: {target}")
    return files


def write_json(target: Path, payload: dict) -> Path:
    """Atomically write ``payload`` as pretty JSON to the file ``target``.

    The text goes to a hidden temporary sibling, is flushed to disk, then renamed over ``target``: readers see
    the old file or the new one, never a partial one. A failed write (disk full, file size limit) leaves the
    old file as it was and removes the temporary one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
