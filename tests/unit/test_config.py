"""globus-tmp.conf: location, defaults, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.config import Config, config_path, load_config, parse_config
from globus_tmp.errors import ConfigError
from globus_tmp.job import UserIdentity


def test_file_beside_slurm_conf_or_named_by_env() -> None:
    assert config_path({"SLURM_CONF": "/opt/lab/etc/slurm.conf"}) == (
        Path("/opt/lab/etc/globus-tmp.conf"),
        False,
    )
    assert config_path({}) == (Path("/etc/slurm/globus-tmp.conf"), False)
    assert config_path({"GLOBUS_TMP_CONFIG": "/x.conf", "SLURM_CONF": "/y"}) == (
        Path("/x.conf"),
        True,
    )


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    cfg = load_config({"SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert cfg == Config()
    assert cfg.exposed_paths == ("/tmp",) and cfg.on_failure == "continue"


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config({"GLOBUS_TMP_CONFIG": str(tmp_path / "nope.conf")})


def test_values_are_read_and_expanded(tmp_path: Path) -> None:
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(
        'gcp_path = "/opt/gcp/globusconnectpersonal"\nstate_dir = "/run/g/%n"\n'
        'exposed_paths = ["/tmp", "/scratch/local"]\nstart_timeout = 5\non_failure = "fail"\n'
    )
    cfg = load_config({"GLOBUS_TMP_CONFIG": str(conf)})
    assert cfg.state_dir_for("node7") == Path("/run/g/node7")
    assert cfg.log_file_for("node7") == Path("/run/g/node7/hooks.log")
    assert cfg.exposed_paths == ("/tmp", "/scratch/local")
    assert cfg.start_timeout == 5.0 and cfg.on_failure == "fail"
    alice = UserIdentity("alice", 1001, 1001, "/home/alice")
    assert cfg.user_dir_for(alice) == Path("/home/alice/.globus-tmp")
    assert cfg.source == str(conf)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("start_timout = 5", "unknown key 'start_timout'"),
        ('start_timeout = "5"', "key 'start_timeout' must be a number of seconds > 0"),
        ("linger_max = -1", "key 'linger_max' must be a number"),
        ('exposed_paths = "/tmp"', "key 'exposed_paths' must be a non-empty list"),
        ('exposed_paths = ["tmp"]', "absolute paths"),
        ('on_failure = "drain"', 'key \'on_failure\' must be "continue" or "fail"'),
        ('gcp_path = "globusconnectpersonal"', "key 'gcp_path' must be an absolute path"),
        ("hook_timeout = 20\nstart_timeout = 15", "must exceed start_timeout"),
        ("start_timeout = [", "not valid TOML"),
    ],
)
def test_bad_values_name_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config({"GLOBUS_TMP_CONFIG": str(conf)})
    assert message in str(info.value)
    assert str(conf) in str(info.value)
    assert "\n" not in str(info.value)


def test_percent_escapes() -> None:
    cfg = parse_config({"state_dir": "/run/x%%y/%n/%q"}, "t")
    assert cfg.state_dir_for("n1") == Path("/run/x%y/n1/%q")


def test_sample_config_documents_the_defaults() -> None:
    sample = Path(__file__).resolve().parents[2] / "slurm-conf-snippets" / "globus-tmp.conf"
    cfg = load_config({"GLOBUS_TMP_CONFIG": str(sample)})
    assert cfg == Config(source=str(sample))


def test_parsed_table_is_cached_for_exactly_this_file_version(tmp_path: Path) -> None:
    """The join path skips TOML parsing: root caches the table, keyed by the file."""
    import json

    cache = tmp_path / "cache"
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text("start_timeout = 11\nhook_timeout = 30\n")
    env = {"GLOBUS_TMP_CONFIG": str(conf)}
    assert load_config(env, str(cache)).start_timeout == 11
    (cached,) = cache.iterdir()
    assert json.loads(cached.read_text())["table"]["start_timeout"] == 11
    # a hit gives the same validated config; a changed file is read again
    assert load_config(env, str(cache)).start_timeout == 11
    conf.write_text("start_timeout = 12\nhook_timeout = 30\n")
    assert load_config(env, str(cache)).start_timeout == 12
    # a bad value in a cached table is still refused: validation runs on every read
    conf.write_text('start_timeout = "soon"\n')
    for _ in range(2):
        with pytest.raises(ConfigError, match="start_timeout"):
            load_config(env, str(cache))


def test_a_cache_root_does_not_own_is_ignored(tmp_path: Path) -> None:
    import json
    import os

    cache = tmp_path / "cache"
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text("start_timeout = 11\nhook_timeout = 30\n")
    env = {"GLOBUS_TMP_CONFIG": str(conf)}
    load_config(env, str(cache))
    (cached,) = cache.iterdir()
    doc = json.loads(cached.read_text())
    doc["table"]["gcp_path"] = "/home/mallory/gcp"
    cached.write_text(json.dumps(doc))
    os.chown(cached, 65534, 65534)  # forged by someone else
    assert load_config(env, str(cache)).gcp_path == Config().gcp_path
    cached.write_text(json.dumps(doc))
    cache.chmod(0o777)  # a cache dir others can write is not trusted either
    assert load_config(env, str(cache)).gcp_path == Config().gcp_path


def _configless(tmp_path: Path) -> dict[str, str]:
    """slurmd's environment on a configless node: SLURM_CONF in its conf cache."""
    cache = tmp_path / "spool" / "conf-cache"
    cache.mkdir(parents=True)
    (cache / "slurm.conf").write_text("ClusterName=c\n")
    return {"SLURM_CONF": str(cache / "slurm.conf")}


def test_with_nothing_beside_slurm_conf_the_fallback_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from globus_tmp import configkeys

    fallback = tmp_path / "etc" / "globus-tmp.conf"
    monkeypatch.setattr(configkeys, "FALLBACK_CONFIG", str(fallback))
    env = _configless(tmp_path)
    assert load_config(env, str(tmp_path / "cache")) == Config(), "neither file: defaults"
    fallback.parent.mkdir()
    fallback.write_text("start_timeout = 21\nhook_timeout = 40\n")
    cfg = load_config(env, str(tmp_path / "cache"))
    assert cfg.start_timeout == 21 and cfg.source == str(fallback)
    beside = Path(env["SLURM_CONF"]).parent / "globus-tmp.conf"
    beside.write_text("start_timeout = 22\nhook_timeout = 40\n")
    assert load_config(env, str(tmp_path / "cache")).start_timeout == 22, "beside comes first"
    with pytest.raises(ConfigError, match="no such file"):
        load_config({**env, "GLOBUS_TMP_CONFIG": str(tmp_path / "nope.conf")})
