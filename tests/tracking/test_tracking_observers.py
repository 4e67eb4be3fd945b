"""The ``pymarl2.observers`` entry point: when it adds a MongoDB observer, and how failures stay harmless."""

import json
import logging
import sys

import pytest
from sacred import Experiment
from sacred.observers import FileStorageObserver, RunObserver

from pymarl_nonmono.tracking import observers as obs
from pymarl_nonmono.tracking.urls import MONGO_URL_ENV

SECRET_URL = "mongodb://alice:s3cr3t-pw@127.0.0.1:1/"


class FakeMongo(RunObserver):
    """Records the events it gets; can fail at a chosen event."""

    def __init__(self, fail_at=None):
        self.events = []
        self.fail_at = fail_at

    def _event(self, name, **data):
        if name == self.fail_at:
            raise ConnectionError(f"lost the server (alice:s3cr3t-pw) during {name}")
        self.events.append((name, data))

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self._event("started", _id=_id, config=config)
        return 41

    def log_metrics(self, metrics_by_name, info):
        self._event("log_metrics", names=sorted(metrics_by_name))
        info.setdefault("metrics", []).extend({"name": n, "id": f"id-{n}"} for n in metrics_by_name)

    def heartbeat_event(self, info, captured_out, beat_time, result):
        self._event("heartbeat", info=dict(info))

    def completed_event(self, stop_time, result):
        self._event("completed")

    def failed_event(self, fail_time, fail_trace):
        self._event("failed")


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch):
    monkeypatch.delenv(MONGO_URL_ENV, raising=False)
    monkeypatch.delenv("PYMARL_NONMONO_MONGO_DB", raising=False)


def test_no_mongodb_configured_adds_nothing():
    assert obs.observers({"mongo_url": "", "mongo_db": ""}) == []
    assert obs.observers({}) == []


def test_unreachable_server_one_warning_no_observer_no_secret(monkeypatch, caplog):
    monkeypatch.setenv(MONGO_URL_ENV, SECRET_URL)

    def refuse(target):
        raise ConnectionRefusedError(f"cannot connect to {target.url}")

    with caplog.at_level(logging.DEBUG):
        assert obs.observers({}, connect=refuse, factory=lambda t: FakeMongo()) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "did not answer" in text and "FileStorage only" in text and "mongodb://***@127.0.0.1:1/" in text
    assert "s3cr3t" not in caplog.text and "alice" not in caplog.text


def test_reachable_server_gives_one_guarded_observer(monkeypatch):
    monkeypatch.setenv(MONGO_URL_ENV, SECRET_URL)
    made = []
    result = obs.observers({"mongo_db": "bench"}, connect=lambda t: None, factory=lambda t: made.append(t) or FakeMongo())
    assert len(result) == 1 and isinstance(result[0], obs.GuardedObserver)
    assert made[0].url == SECRET_URL and made[0].db == "bench"
    assert result[0].priority < FileStorageObserver(".").priority
    assert "s3cr3t" not in repr(result[0])


@pytest.mark.parametrize("config,needle", [
    ({"mongo_url": SECRET_URL}, "carries a user, password"),
    ({"mongo_url": "mongo://h"}, "malformed MongoDB URL"),
    ({"mongo_url": "mongodb://h", "mongo_db": "a.b"}, "database name"),
])
def test_bad_settings_stop_the_run_with_one_line(config, needle):
    with pytest.raises(SystemExit) as info:
        obs.observers(config, connect=lambda t: None, factory=lambda t: FakeMongo())
    message = str(info.value.code)
    assert message.startswith("pymarl-nonmono: ") and needle in message and "s3cr3t" not in message


def test_missing_pymongo_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(SystemExit) as info:
        obs.observers({"mongo_url": "mongodb://h"})
    assert "pip install pymongo" in str(info.value.code)


def test_failure_mid_run_warns_once_then_silence(caplog):
    inner = FakeMongo(fail_at="log_metrics")
    guarded = obs.GuardedObserver(inner, obs.resolve(None, None, {MONGO_URL_ENV: SECRET_URL}))
    guarded.started_event({}, "c", {}, None, {}, {}, _id=7)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            guarded.log_metrics({"x": {}}, {})
            guarded.heartbeat_event({}, "", None, None)
        guarded.completed_event(None, None)
    assert [e for e, _ in inner.events] == ["started"]
    assert inner.events[0][1]["_id"] is None  # FileStorage owns the run id
    assert len(caplog.records) == 1 and "during log_metrics" in caplog.records[0].getMessage()
    assert "s3cr3t" not in caplog.text


def test_failure_at_start_does_not_stop_the_run():
    guarded = obs.GuardedObserver(FakeMongo(fail_at="started"), obs.resolve("mongodb://h", None, {}))
    assert guarded.started_event({}, "c", {}, None, {}, {}, _id=None) is None
    assert guarded.failed


def test_with_sacred_filestorage_keeps_its_ids_and_its_info(tmp_path):
    """A real Sacred run: FileStorage picks the id, its info.json has no MongoDB references."""
    ex = Experiment("probe", save_git_info=False)
    inner = FakeMongo()
    guarded = obs.GuardedObserver(inner, obs.resolve("mongodb://h", None, {}))
    ex.observers.append(FileStorageObserver(str(tmp_path)))
    ex.observers.append(guarded)

    @ex.main
    def main(_run):
        _run.info["loss"] = [1.0]
        _run.log_scalar("loss", 1.0, 5)
        return 3

    run = ex.run(options={"--loglevel": "ERROR"})
    assert run.status == "COMPLETED" and str(run._id) == "1"
    info = json.loads((tmp_path / "1" / "info.json").read_text())
    assert info == {"loss": [1.0]}
    metrics = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert metrics["loss"]["steps"] == [5]
    names = [e for e, _ in inner.events]
    assert names[0] == "started" and names[-1] == "completed" and "log_metrics" in names
    last_beat = [d for e, d in inner.events if e == "heartbeat"][-1]
    assert last_beat["info"]["metrics"] == [{"name": "loss", "id": "id-loss"}]


def test_run_ids_past_nine_on_a_server_that_sorts_ids_as_text(mongo_url, tmp_path):
    """nx-27017 sorts _id 9 after 10; Sacred's own insert would then loop forever."""
    import pymongo

    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    client["ids"].runs.insert_many([{"_id": i} for i in range(1, 13)])
    client.close()
    observer = obs.make_mongo_observer(obs.resolve(mongo_url, "ids", {}))
    ex_info = {"base_dir": str(tmp_path), "sources": [], "name": "probe", "dependencies": [], "repositories": [],
               "mainfile": "x.py"}
    assert observer.started_event(ex_info, "main", {}, None, {"a": 1}, {}, None) == 13
