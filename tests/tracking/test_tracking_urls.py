"""MongoDB URL resolution: precedence, validation, and credentials kept out of messages."""

import pytest

from pymarl_nonmono.tracking.urls import (
    DEFAULT_DB, MONGO_DB_ENV, MONGO_URL_ENV, MongoURLError, check_db_name, check_url, describe_error, has_secrets, mask_url, redact,
    resolve,
)

SECRET_URL = "mongodb://alice:s3cr3t-pw@db.example.org:27017/admin?authSource=admin"


def test_nothing_configured_means_no_mongodb():
    assert resolve(None, None, {}) is None
    assert resolve("", "", {}) is None


def test_config_url_wins_over_the_environment():
    target = resolve("mongodb://cfg-host:27017", None, {MONGO_URL_ENV: "mongodb://env-host:27017"})
    assert target.url == "mongodb://cfg-host:27017" and target.source == "config mongo_url"


def test_environment_used_when_config_is_empty_and_may_carry_credentials():
    target = resolve("", None, {MONGO_URL_ENV: SECRET_URL})
    assert target.url == SECRET_URL and target.source == f"${MONGO_URL_ENV}"
    assert "s3cr3t" not in repr(target) and "s3cr3t" not in str(target) and "s3cr3t" not in target.shown


def test_off_disables_even_when_the_environment_names_a_server():
    assert resolve("off", None, {MONGO_URL_ENV: "mongodb://env-host"}) is None
    assert resolve("OFF", None, {MONGO_URL_ENV: "mongodb://env-host"}) is None


def test_database_precedence():
    env = {MONGO_URL_ENV: "mongodb://h", MONGO_DB_ENV: "from_env"}
    assert resolve(None, "from_config", env).db == "from_config"
    assert resolve(None, "", env).db == "from_env"
    assert resolve(None, None, {MONGO_URL_ENV: "mongodb://h"}).db == DEFAULT_DB == "sacred"


@pytest.mark.parametrize("url", [SECRET_URL, "mongodb://bob@h:1", "mongodb://h/?tlsCertificateKeyFilePassword=pw123",
                                 "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:tok123"])
def test_config_url_with_credentials_is_refused_without_showing_them(url):
    assert has_secrets(url)
    with pytest.raises(MongoURLError) as info:
        resolve(url, None, {})
    message = str(info.value)
    assert MONGO_URL_ENV in message and "mongo_url=" in message
    for secret in ("s3cr3t", "alice", "pw123", "tok123", "bob"):
        assert secret not in message


def test_command_option_may_carry_credentials_when_allowed():
    target = resolve(SECRET_URL, None, {}, url_source="--mongo-url", allow_secrets=True)
    assert target.url == SECRET_URL and target.source == "--mongo-url"


@pytest.mark.parametrize("url,why", [
    ("http://h:27017", "mongodb://"),
    ("mongodb://", "no host"),
    ("mongodb://h:99999", "1..65535"),
    ("mongodb://h:port", "not in 1..65535"),
    ("mongodb+srv://a,b", "one host name"),
    ("mongodb+srv://h:27017", "no port"),
    ("localhost:27017", "mongodb://"),
    ("mongodb://h/a.b", "bad database part"),
])
def test_malformed_urls_are_named(url, why):
    with pytest.raises(MongoURLError) as info:
        check_url(url, "somewhere")
    assert why in str(info.value) and "somewhere" in str(info.value)


def test_malformed_url_message_masks_credentials():
    with pytest.raises(MongoURLError) as info:
        resolve(None, None, {MONGO_URL_ENV: "mongodb://u:hunter22@h:0"})
    assert "hunter22" not in str(info.value) and "***@h:0" in str(info.value)


@pytest.mark.parametrize("url", ["mongodb://localhost", "mongodb://127.0.0.1:27017/", "mongodb://a:1,b:2,c/?replicaSet=rs0",
                                 "mongodb://[::1]:27017", "mongodb+srv://cluster0.example.net/", SECRET_URL])
def test_wellformed_urls_pass(url):
    assert check_url(url, "x") == url


@pytest.mark.parametrize("db", ["", "a.b", "a/b", "x" * 64, "a b", "$x"])
def test_bad_database_names(db):
    with pytest.raises(MongoURLError) as info:
        check_db_name(db, "config mongo_db")
    assert "config mongo_db" in str(info.value)


def test_bad_database_name_from_the_environment_is_named():
    with pytest.raises(MongoURLError) as info:
        resolve("mongodb://h", None, {MONGO_DB_ENV: "a.b"})
    assert MONGO_DB_ENV in str(info.value)


def test_mask_and_redact():
    assert mask_url(SECRET_URL) == "mongodb://***@db.example.org:27017/admin?***"
    assert mask_url("mongodb://h:1") == "mongodb://h:1"
    text = "auth failed for alice with s3cr3t-pw at db.example.org"
    assert redact(text, SECRET_URL) == "auth failed for *** with *** at db.example.org"


def test_describe_error_is_one_short_line_without_secrets():
    exc = RuntimeError("h:1: [Errno 111] Connection refused for alice:s3cr3t-pw (configured timeouts: x), Timeout: 3s")
    text = describe_error(exc, SECRET_URL)
    assert text == "RuntimeError: h:1: [Errno 111] Connection refused for ***"
