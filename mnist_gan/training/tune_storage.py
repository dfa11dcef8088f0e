"""Where a study of `mnist-gan tune` lives: opening Optuna's storage (SQLite or a database server) in one line
or one refusal, the lock that keeps a SQLite study file to one process, the heartbeats of a shared storage's
trials, and failing the trials a stop or a kill left unfinished so that their parameters are asked again
(Optuna's RetryHeartbeatStaleTrialCallback, as its documentation recommends for killed workers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path

from mnist_gan.errors import MnistGanError, clip
from mnist_gan.io.files import exclusive_lock

logger = logging.getLogger(__name__)

MAX_RETRIES = 2  # a trial whose worker died is asked again at most this many times
CONNECT_SECONDS = 10  # to reach a database server
CREATE_ATTEMPTS = 3  # workers starting together race to create the tables: the losers try again


def open_storage(optuna, url: str, heartbeat: int | None):
    """Optuna's RDBStorage at `url`, with heartbeats (and retries of dead workers' trials) when shared; a storage
    that cannot be reached is one MnistGanError line (the password left out)."""
    shown = shown_url(url)
    if url.startswith("postgresql://"):  # the driver the [tune] extra installs, whatever SQLAlchemy's default
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = {"connect_args": {"connect_timeout": CONNECT_SECONDS}} if url.startswith("postgresql") else {}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat} if heartbeat else {}
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_stale_trial_callback=retry,
                                              **kwargs)
        except ImportError:
            raise MnistGanError(f"cannot reach storage {shown}: its database driver is not installed "
                                "(PostgreSQL: pip install 'mnist-gan[tune]')") from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's and the driver's errors
            import sqlalchemy.exc

            # Two workers creating the tables of a new database at once: one wins, the other finds them made.
            if attempt < CREATE_ATTEMPTS and isinstance(error, (sqlalchemy.exc.IntegrityError,
                                                        sqlalchemy.exc.ProgrammingError)):
                time.sleep(attempt)
                continue
            raise MnistGanError(f"cannot reach storage {shown}: {clip(error)}") from None


def fail_and_retry(optuna, study, trial) -> None:
    """Mark an unfinished trial FAIL and queue its parameters again (the storage's retry callback)."""
    storage = study._storage  # the one place Optuna's own fail_stale_trials reaches too
    try:
        if storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial._trial_id))
    except Exception as error:  # noqa: BLE001 - a stop must not hide behind a database's error
        logger.warning(f"trial {trial.number} could not be marked failed: {clip(error)}")


def retry_abandoned(optuna, study) -> None:
    """The RUNNING trials of a study file this process holds were left by a killed one: fail, ask again."""
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        logger.info(f"trial {frozen.number} was left running by a stopped process: failed, asked again")
        fail_and_retry(optuna, study, frozen)


@contextlib.contextmanager
def heartbeats(study, trials: list):
    """Record each trial's heartbeat while it trains, when the storage keeps them (a shared storage)."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                    storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def sqlite_lock(path: Path):
    """Hold an exclusive lock on the SQLite study file (created empty if new, which SQLite reads as a new
    database) for as long as the study runs: a second tune process on the file is refused, never interleaved."""
    if not path.parent.is_dir():
        raise MnistGanError(f"cannot reach storage sqlite:///{path}: {path.parent} is not a directory")
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as error:
        raise MnistGanError(f"cannot reach storage sqlite:///{path}: {error.strerror or error}") from None
    with exclusive_lock(path, busy="another mnist-gan tune process is running this study; several workers "
                                   "share a study through a database server (--storage postgresql://...)"):
        yield


@contextlib.contextmanager
def quiet_optuna(optuna):
    """Optuna's own INFO lines and its experimental-feature warnings (heartbeats, the retry callback) off;
    this module says what happens, through the mnist_gan logger."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:///PATH URL, else None (a server, or SQLite in memory)."""
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(url[len("sqlite:///"):].split("?")[0])


def shown_url(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':')[0]}:***@{host}"


def as_stored(value: object) -> object:
    """A value as it comes back from the storage's JSON (tuples become lists)."""
    return json.loads(json.dumps(value))
