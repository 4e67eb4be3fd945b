"""Entry point ``pymarl2.observers`` (patch 0005): a Sacred MongoObserver when configured.

``observers(config)`` is called by PyMARL2's ``main.py`` with the run's final config just
before Sacred starts its observers. It returns ``[]`` (FileStorage only) or one
:class:`GuardedObserver` around Sacred's ``MongoObserver``:

* a bad setting (malformed URL, credentials in the config, pymongo missing) stops the run
  before anything is recorded, with one line naming it;
* a server that does not answer within :data:`PING_TIMEOUT_MS` gives one warning and the
  run goes on with FileStorage alone;
* a server lost during the run gives one warning and the observer falls silent; the
  FileStorage record is complete either way.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional

from sacred.observers import RunObserver

from .urls import MONGO_URL_ENV, MongoTarget, MongoURLError, describe_error, resolve

log = logging.getLogger(__name__)

PING_TIMEOUT_MS = 3000
SOCKET_TIMEOUT_MS = 60_000
INSERT_ATTEMPTS = 20
# Below FileStorageObserver's 20: FileStorage starts first and picks the run id, so a
# MongoDB whose ids restarted (new database) can never collide with an existing
# results/sacred/<map>/<name>/<id> folder; MongoDB numbers its runs itself.
PRIORITY = 10


def _stop(message: str) -> SystemExit:
    # SystemExit passes main.py's hook unwrapped and Sacred prints no traceback for it.
    return SystemExit(f"pymarl-nonmono: {message}")


def target_from_config(config: Mapping) -> Optional[MongoTarget]:
    return resolve(config.get("mongo_url"), config.get("mongo_db"))


def _quiet_driver_logs() -> None:
    # PyMARL2 sets the root logger to DEBUG, so pymongo would log every command it sends
    # (whole run documents, every heartbeat) to the console and to cout.txt.
    driver = logging.getLogger("pymongo")
    if driver.level == logging.NOTSET:
        driver.setLevel(logging.WARNING)


def ping(target: MongoTarget, timeout_ms: int = PING_TIMEOUT_MS) -> None:
    import pymongo

    client = pymongo.MongoClient(target.url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def make_mongo_observer(target: MongoTarget, timeout_ms: int = PING_TIMEOUT_MS):
    from sacred.observers import MongoObserver

    class BoundedMongoObserver(MongoObserver):
        """Sacred's MongoObserver with a bounded search for a free run id.

        Sacred's own insert retries forever on a duplicate id and takes the largest id from
        the server's sort on ``_id``; a server that sorts ids as text (nx-27017: 9 > 10)
        then loops forever and the run never starts. Here the largest integer id is found
        in Python and a few collisions with concurrent runs are retried.
        """

        def insert(self):
            import pymongo.errors

            if self.overwrite or self.run_entry.get("_id") is not None:
                return super().insert()
            for _ in range(INSERT_ATTEMPTS):
                ids = [doc["_id"] for doc in self.runs.find({}, {"_id": 1}) if type(doc.get("_id")) is int]
                self.run_entry["_id"] = max(ids, default=0) + 1
                try:
                    self.runs.insert_one(self.run_entry)
                    return None
                except pymongo.errors.DuplicateKeyError:
                    continue
            self.run_entry["_id"] = None
            raise RuntimeError(f"no free run id after {INSERT_ATTEMPTS} attempts (other runs kept taking them)")

    # socketTimeoutMS: a server that accepts the connection but never answers must not
    # hold the run; the guard turns the timeout into one warning.
    return BoundedMongoObserver(url=target.url, db_name=target.db, serverSelectionTimeoutMS=timeout_ms,
                                connectTimeoutMS=timeout_ms, socketTimeoutMS=SOCKET_TIMEOUT_MS)


def observers(config: Mapping, *, connect: Optional[Callable[[MongoTarget], None]] = None,
              factory: Optional[Callable[[MongoTarget], RunObserver]] = None) -> list:
    """Observers to add for a run with ``config``; ``connect``/``factory`` replace pymongo in tests."""
    try:
        target = target_from_config(config)
    except MongoURLError as exc:
        raise _stop(str(exc)) from None
    if target is None:
        return []
    _quiet_driver_logs()
    if connect is None or factory is None:
        try:
            import pymongo  # noqa: F401  (only to learn whether it is there)
        except ImportError:
            raise _stop(f"MongoDB is configured ({target.source}) but pymongo is not installed: pip install pymongo "
                        f"(or run with mongo_url=off)") from None
    try:
        (connect or ping)(target)
    except Exception as exc:
        log.warning("MongoDB at %s (%s, database %r) did not answer (%s); this run is recorded by FileStorage only",
                    target.shown, target.source, target.db, describe_error(exc, target.url))
        return []
    observer = GuardedObserver((factory or make_mongo_observer)(target), target)
    log.info("recording to MongoDB at %s, database %r (%s)", target.shown, target.db, target.source)
    return [observer]


class GuardedObserver(RunObserver):
    """Forwards Sacred's events to ``inner``; after its first failure, one warning and silence.

    Sacred would stop a run whose observer fails at start, and log each later failure;
    here MongoDB is the second copy of the record, so it must never cost the run.
    The metric references MongoObserver writes into the run's ``info`` are kept in its
    own document only, so FileStorage's ``info.json`` stays exactly the host's record.
    """

    priority = PRIORITY

    def __init__(self, inner: RunObserver, target: MongoTarget):
        self.inner = inner
        self.target = target
        self.failed = False
        self.run_id = None
        self._metric_refs: list = []

    def __repr__(self) -> str:
        return f"GuardedObserver({type(self.inner).__name__} at {self.target.shown}, database {self.target.db!r})"

    def _call(self, event: str, *args, **kwargs):
        if self.failed:
            return None
        try:
            return getattr(self.inner, event)(*args, **kwargs)
        except Exception as exc:
            self.failed = True
            log.warning("MongoDB at %s failed during %s (%s); the rest of this run is recorded by FileStorage only",
                        self.target.shown, event, describe_error(exc, self.target.url))
            return None

    def queued_event(self, ex_info, command, host_info, queue_time, config, meta_info, _id):
        return self._call("queued_event", ex_info, command, host_info, queue_time, config, meta_info, None)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        # The id belongs to FileStorage (see PRIORITY); MongoDB numbers its own runs.
        self.run_id = self._call("started_event", ex_info, command, host_info, start_time, config, meta_info, None)
        return None

    def log_metrics(self, metrics_by_name, info):
        scratch: dict = {}
        self._call("log_metrics", metrics_by_name, scratch)
        self._metric_refs.extend(scratch.get("metrics", []))

    def heartbeat_event(self, info, captured_out, beat_time, result):
        if self._metric_refs:
            info = dict(info, metrics=list(self._metric_refs))
        self._call("heartbeat_event", info, captured_out, beat_time, result)

    def completed_event(self, stop_time, result):
        self._call("completed_event", stop_time, result)

    def interrupted_event(self, interrupt_time, status):
        self._call("interrupted_event", interrupt_time, status)

    def failed_event(self, fail_time, fail_trace):
        self._call("failed_event", fail_time, fail_trace)

    def resource_event(self, filename):
        self._call("resource_event", filename)

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        self._call("artifact_event", name, filename, metadata=metadata, content_type=content_type)

    def join(self):
        self._call("join")


__all__ = ["GuardedObserver", "MONGO_URL_ENV", "PING_TIMEOUT_MS", "observers", "ping", "target_from_config"]
