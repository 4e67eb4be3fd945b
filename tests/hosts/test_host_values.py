"""The value rules for keys every algorithm shares (lr, gamma, batch sizes, epsilon schedule, t_max,
...): they stop a stock run with a bad value at start-up, and every configuration the hosts ship
passes them (a rule stricter than the hosts would refuse their own algorithms)."""

import pytest
import yaml

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.hosts.pymarl_family.settings import check_host_values


def merged_configs(config_dir):
    default = yaml.safe_load((config_dir / "default.yaml").read_text()) or {}
    for env in sorted((config_dir / "envs").glob("*.yaml")):
        for alg in sorted((config_dir / "algs").glob("*.yaml")):
            yield f"{env.stem} x {alg.stem}", {**default, **(yaml.safe_load(env.read_text()) or {}),
                                               **(yaml.safe_load(alg.read_text()) or {})}


@pytest.mark.integration
@pytest.mark.parametrize("host", ["pymarl2_pristine", "epymarl_pristine"])
def test_every_shipped_host_config_passes_the_shared_rules(host, request):
    root = request.getfixturevalue(host)
    checked = 0
    for name, config in merged_configs(root / "src" / "config"):
        check_host_values(config)
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("key,value,message", [
    ("lr", -0.001, r"lr=-0.001 is outside the allowed range \(0.0, inf\)"),
    ("gamma", 1.5, r"gamma=1.5 is outside"),
    ("epsilon_finish", -0.1, r"epsilon_finish=-0.1 is outside"),
    ("batch_size", 0, r"batch_size=0 must be an integer >= 1"),
    ("batch_size_run", 2.5, r"batch_size_run=2.5 must be an integer >= 1"),
    ("t_max", 0, r"t_max=0 is outside"),
    ("buffer_size", 16, r"buffer_size=16 holds fewer episodes than batch_size=32"),
])
def test_a_bad_shared_value_names_the_key(key, value, message):
    config = {"lr": 0.0005, "gamma": 0.99, "batch_size": 32, "buffer_size": 5000, "t_max": 10000, key: value}
    with pytest.raises(ConfigError, match=message):
        check_host_values(config)
