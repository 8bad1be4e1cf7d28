"""quickconfig (the lookup's reading of globus-tmp.conf) never accepts what config refuses,
and where it answers, it answers as config does (both check with configkeys)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from globus_tmp import configkeys, quickconfig
from globus_tmp.config import Config, load_config, parse_config
from globus_tmp.errors import ConfigError
from globus_tmp.quickconfig import quick_lookup_config


def test_configs_defaults_are_the_lookups() -> None:
    defaults = Config()
    assert defaults.state_dir == configkeys.DEFAULT_STATE_DIR
    assert defaults.exposed_paths == configkeys.DEFAULT_EXPOSED_PATHS
    assert defaults.start_timeout == configkeys.DEFAULT_START_TIMEOUT
    assert defaults.hook_timeout == configkeys.DEFAULT_HOOK_TIMEOUT


def test_every_config_field_is_a_key() -> None:
    keys = {f.name for f in dataclasses.fields(Config)} - {"source"}
    assert keys == configkeys.KEYS


TABLES = [
    "",
    'state_dir = "/run/g/%n"\nexposed_paths = ["/tmp", "/scratch/local"]',
    'state_dir = "/run/x%%y/%n/%q"',
    'gcp_path = "/opt/gcp/globusconnectpersonal"\nstart_timeout = 5\non_failure = "fail"',
    'user_dir = "~/.g"\nlog_file = ""\nmetrics_file = "/var/m.prom"\nsyslog_facility = "local3"',
    'gcp_cgroup = "gt"\ngcp_cpu_max = 1.5\ngcp_memory_max = 0\nhold_max_bytes = 7',
    'globus_client_id = "abc"\nglobus_service_urls = { transfer = "https://t.example" }',
    "linger_max = 1\nlinger_poll_seconds = 0.5\nlinger_unverified = 1\njob_grace = 3\n"
    "stop_grace = 2",
    'slurm_bin_dir = "/usr/bin"',
    # refused by config: quickconfig must refuse them too
    "start_timout = 5",
    'start_timeout = "5"',
    "start_timeout = true",
    "linger_max = -1",
    'exposed_paths = "/tmp"',
    "exposed_paths = []",
    'exposed_paths = ["tmp"]',
    'on_failure = "drain"',
    'gcp_path = "globusconnectpersonal"',
    'state_dir = "run/%n"',
    'log_file = "hooks.log"',
    'user_dir = "x"',
    "hook_timeout = 20\nstart_timeout = 15",
    "hook_timeout = 69",
    'syslog_facility = "local9"',
    'gcp_cgroup = "a/b"',
    'gcp_cgroup = ".x"',
    "gcp_cpu_max = -1",
    "gcp_memory_max = 1.5",
    "hold_max_bytes = -1",
    'globus_service_urls = { transfer = "ftp://x" }',
    "globus_client_id = 5",
    "linger_max = nan",
    "gcp_cpu_max = nan",
    'slurm_bin_dir = "bin"',
    'slurm_bin_dir = "/nonexistent/slurm/bin"',
]


@pytest.mark.parametrize("text", TABLES)
def test_quick_answers_only_as_config_does(tmp_path: Path, text: str) -> None:
    cache = tmp_path / "cache"
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(text + "\n")
    env = {"GLOBUS_TMP_CONFIG": str(conf)}
    assert quick_lookup_config(env, str(cache)) is None  # nothing cached yet: ask config
    try:
        full: Config | None = load_config(env, str(cache))  # as root: caches the table
    except ConfigError:
        full = None
    assert os.geteuid() == 0 and any(cache.iterdir())
    quick = quick_lookup_config(env, str(cache))
    if full is None:
        assert quick is None
        return
    assert quick is not None, "a valid table quickconfig knows every key of"
    assert Path(quick.state_dir_for("n7")) == full.state_dir_for("n7")
    assert quick.exposed_paths == full.exposed_paths


def test_percent_escapes_as_config() -> None:
    text = "/run/x%%y/%n/%q%"
    quick = quickconfig.LookupConfig(text, ("/tmp",))
    assert Path(quick.state_dir_for("n1")) == parse_config({"state_dir": text}, "t").state_dir_for(
        "n1"
    )


def test_no_file_at_the_default_place_means_defaults(tmp_path: Path) -> None:
    quick = quick_lookup_config({"SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert quick is not None
    assert quick.state_dir == Config().state_dir and quick.exposed_paths == ("/tmp",)


def test_a_named_missing_file_is_configs_to_report(tmp_path: Path) -> None:
    assert quick_lookup_config({"GLOBUS_TMP_CONFIG": str(tmp_path / "nope.conf")}) is None


def test_a_changed_file_or_a_forged_cache_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text('state_dir = "/run/a/%n"\n')
    env = {"GLOBUS_TMP_CONFIG": str(conf)}
    load_config(env, str(cache))
    assert quick_lookup_config(env, str(cache)) is not None
    conf.write_text('state_dir = "/run/b/%n"\n')  # not yet cached by root
    assert quick_lookup_config(env, str(cache)) is None
    load_config(env, str(cache))
    quick = quick_lookup_config(env, str(cache))
    assert quick is not None and quick.state_dir == "/run/b/%n"
    (cached,) = cache.iterdir()
    os.chown(cached, 65534, 65534)
    assert quick_lookup_config(env, str(cache)) is None


def test_the_fallback_file_costs_one_open_and_only_when_nothing_is_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    fallback = tmp_path / "etc" / "globus-tmp.conf"
    monkeypatch.setattr(configkeys, "FALLBACK_CONFIG", str(fallback))
    env = {"SLURM_CONF": str(tmp_path / "spool" / "conf-cache" / "slurm.conf")}
    opened: list[str] = []
    real_open = os.open

    def counting(path: str, *args: int) -> int:
        opened.append(str(path))
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", counting)
    quick = quick_lookup_config(env, str(cache))
    assert quick is not None and quick.state_dir == Config().state_dir
    assert opened == [str(tmp_path / "spool" / "conf-cache" / "globus-tmp.conf"), str(fallback)]
    fallback.parent.mkdir()
    fallback.write_text('state_dir = "/run/fb/%n"\n')
    load_config(env, str(cache))  # as root: caches the table
    quick = quick_lookup_config(env, str(cache))
    assert quick is not None and quick.state_dir == "/run/fb/%n"
