"""The node_exporter textfile (``metrics_file``): counters that outlive the hook
processes that counted them, gauges from node state, written so that the collector
never reads half a file, and nothing at all when the key is empty."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from globus_tmp import metrics
from globus_tmp.config import Config
from globus_tmp.errors import HookTimeout, PoolExhaustedError
from globus_tmp.hookrunner import outcome_of
from globus_tmp.locks import append_shared
from globus_tmp.nodestate import GcpInstance, HeldTmp, NodeStateStore, UserNodeState
from globus_tmp.phases import Phase
from globus_tmp.process import ProcessRef
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(autouse=True)
def _no_pending() -> Iterator[None]:
    metrics._pending.clear()
    yield
    metrics._pending.clear()


def _cfg(tmp_path: Path, **kw: object) -> Config:
    (tmp_path / "textfile").mkdir(exist_ok=True)
    defaults: dict[str, object] = {
        "state_dir": str(tmp_path / "state" / "%n"),
        "metrics_file": str(tmp_path / "textfile" / "globus_tmp_%n.prom"),
    }
    defaults.update(kw)
    return Config(**defaults)  # type: ignore[arg-type]


def _parse(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the textfile, keyed by (sample name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    labels.setdefault("node", "n1")
    return samples[(name, tuple(sorted(labels.items())))]


def _prepared_state(cfg: Config) -> NodeStateStore:
    """alice: a live GCP (this process stands for it), 2 jobs, 2 holds; bob: draining
    (a live drain: this process again) with no job; carol: idle."""
    store = NodeStateStore(cfg.state_dir_for("n1"))
    store.ensure()
    me = ProcessRef.of(os.getpid())
    inst = GcpInstance(me.pid, me.start_ticks, "e-1", "ep1", "/c", "/l", time.time())
    alice = UserNodeState("alice", 1001, jobs={"1": time.time(), "2": time.time()})
    alice.phase, alice.instance = Phase.RUNNING, inst
    alice.holds = {"7": HeldTmp("/h/7", 1000, time.time()), "8": HeldTmp("/h/8", 24, time.time())}
    bob = UserNodeState("bob", 1002, phase=Phase.DRAINING, instance=inst)
    bob.drain = me
    store.write(alice)
    store.write(bob)
    store.write(UserNodeState("carol", 1003))
    return store


def test_render_from_a_prepared_state_dir(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, hold_max_bytes=4096)
    _prepared_state(cfg)
    metrics.count("gcp_starts_total")
    metrics.count_api("task_list")
    metrics.count_api("task_list", failed=True)
    metrics.record_run(cfg, "n1", "epilog", "ok", seconds=0.07)
    path = tmp_path / "textfile" / "globus_tmp_n1.prom"  # %n expanded
    text = path.read_text()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("globus_tmp_")
        assert f"# HELP {family.name}" in text and f"# TYPE {family.name}" in text
    s = _parse(path)
    assert _value(s, "globus_tmp_instances") == 2  # alice's and bob's (draining)
    assert _value(s, "globus_tmp_jobs") == 2
    assert _value(s, "globus_tmp_drains") == 1
    assert _value(s, "globus_tmp_holds") == 2
    assert _value(s, "globus_tmp_held_bytes") == 1024
    assert _value(s, "globus_tmp_hold_max_bytes") == 4096
    assert _value(s, "globus_tmp_users", phase="running") == 1
    assert _value(s, "globus_tmp_users", phase="draining") == 1
    assert _value(s, "globus_tmp_users", phase="idle") == 1
    assert _value(s, "globus_tmp_users", phase="failed") == 0
    assert _value(s, "globus_tmp_gcp_starts_total") == 1
    assert _value(s, "globus_tmp_gcp_stops_total") == 0
    assert _value(s, "globus_tmp_gcp_kills_total") == 0
    assert _value(s, "globus_tmp_transfer_api_calls_total", op="task_list") == 2
    assert _value(s, "globus_tmp_transfer_api_errors_total", op="task_list") == 1
    assert _value(s, "globus_tmp_transfer_api_calls_total", op="submit") == 0
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 1
    assert _value(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 0
    bucket = "globus_tmp_hook_duration_seconds_bucket"
    assert _value(s, bucket, hook="epilog", le="0.05") == 0
    assert _value(s, bucket, hook="epilog", le="0.1") == 1
    assert _value(s, bucket, hook="epilog", le="+Inf") == 1
    assert _value(s, "globus_tmp_hook_duration_seconds_count", hook="epilog") == 1
    assert _value(s, "globus_tmp_hook_duration_seconds_sum", hook="epilog") == pytest.approx(0.07)
    assert _value(s, "globus_tmp_hook_duration_seconds_count", hook="reconcile") == 0
    assert time.time() - _value(s, "globus_tmp_metrics_rendered_timestamp_seconds") < 60


def test_counters_accumulate_across_hook_processes(tmp_path: Path) -> None:
    """Each run is its own process, as under slurmd, and ends as run_hook ends it: a
    Prolog join (and an Epilog that only removed its job, within RENDER_EVERY of the
    last render) only appends to the journal; the next run that renders folds it in."""
    cfg = _cfg(tmp_path)
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(f'state_dir = "{cfg.state_dir}"\nmetrics_file = "{cfg.metrics_file}"\n')
    NodeStateStore(cfg.state_dir_for("n1")).ensure()
    script = (
        "import sys\n"
        "from globus_tmp.config import load_config\n"
        "from globus_tmp.hookrunner import _record_run\n"
        "hook, outcome, starts = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "if starts:\n"
        "    from globus_tmp import metrics\n"
        "    metrics.count('gcp_starts_total', by=starts)\n"
        "_record_run(load_config(), 'n1', hook, outcome)\n"
    )
    env = {"GLOBUS_TMP_CONFIG": str(conf), "PATH": "/usr/bin:/bin"}

    def run(hook: str, outcome: str = "ok", starts: int = 0) -> None:
        subprocess.run(
            [sys.executable, "-c", script, hook, outcome, str(starts)], env=env, check=True
        )

    path = tmp_path / "textfile" / "globus_tmp_n1.prom"
    run("prolog", starts=1)  # a start: renders
    assert _value(_parse(path), "globus_tmp_gcp_starts_total") == 1
    run("prolog")  # a join: journal only, the textfile is as it was
    run("epilog")  # a job left, not the last: journal only (rendered a moment ago)
    journal = cfg.state_dir_for("n1") / metrics.JOURNAL
    lines = journal.read_bytes().split(b"\n")
    assert lines[0].startswith(b"#gen ") and lines[1].startswith(b"prolog ok 0.")
    assert lines[2].startswith(b"epilog ok 0.") and lines[3:] == [b""]
    assert _value(_parse(path), "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 1
    run("prolog", "PoolExhaustedError")  # a failure: renders
    s = _parse(path)
    assert _value(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 2
    assert _value(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="PoolExhaustedError") == 1
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 1
    assert _value(s, "globus_tmp_hook_duration_seconds_count", hook="prolog") == 3
    assert 0 < _value(s, "globus_tmp_hook_duration_seconds_sum", hook="prolog") < 60
    assert _value(s, "globus_tmp_gcp_starts_total") == 1
    assert journal.read_bytes().startswith(b"#gen ") and journal.read_bytes().count(b"\n") == 1


def test_a_fold_interrupted_before_the_journal_is_emptied_counts_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    NodeStateStore(cfg.state_dir_for("n1")).ensure()
    for _ in range(3):  # joins
        append_shared(
            cfg.state_dir_for("n1") / metrics.JOURNAL, metrics.journal_line("prolog", 0.01), 1
        )
    real = os.ftruncate

    def crash(fd: int, size: int) -> None:
        raise OSError("killed between the two writes")

    monkeypatch.setattr(os, "ftruncate", crash)
    metrics.record_run(cfg, "n1", "epilog", "ok", 0.01)  # swallowed: never fails a hook
    monkeypatch.setattr(os, "ftruncate", real)
    metrics.record_run(cfg, "n1", "reconcile", "ok", 0.01)
    s = _parse(tmp_path / "textfile" / "globus_tmp_n1.prom")
    assert _value(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 3
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 1
    assert _value(s, "globus_tmp_hook_runs_total", hook="reconcile", outcome="ok") == 1


def test_the_textfile_is_replaced_by_rename_mode_0644(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path)
    _prepared_state(cfg)
    path = tmp_path / "textfile" / "globus_tmp_n1.prom"
    renames: list[tuple[str, str, str]] = []
    real_replace, real_open = os.replace, os.open

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == path:  # complete before it takes the name, and never a *.prom
            renames.append((str(src), str(dst), Path(src).read_text()))
            assert not str(src).endswith(".prom")
        real_replace(src, dst)

    def spy_open(p: str | os.PathLike[str], flags: int, *args: int, **kw: int) -> int:
        assert Path(p) != path or not flags & (os.O_WRONLY | os.O_RDWR), "written in place"
        return real_open(p, flags, *args, **kw)

    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "open", spy_open)
    metrics.record_run(cfg, "n1", "epilog", "ok", 0.3)
    first = os.stat(path)
    metrics.record_run(cfg, "n1", "epilog", "ok", 0.3)
    second = os.stat(path)
    assert len(renames) == 2 and renames[1][2] == path.read_text()
    assert text_string_to_metric_families(renames[0][2])  # each one whole
    assert first.st_ino != second.st_ino  # a new file each time, not rewritten in place
    assert stat.S_IMODE(second.st_mode) == 0o644 and second.st_uid == os.geteuid()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp left
    counts = cfg.state_dir_for("n1") / metrics.COUNTS
    assert json.loads(counts.read_text())["version"] == 1


def test_empty_metrics_file_writes_nothing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, metrics_file="")
    store = NodeStateStore(cfg.state_dir_for("n1"))
    store.ensure()
    before = sorted(p.name for p in store.root.iterdir())
    metrics.count("gcp_starts_total")
    metrics.record_run(cfg, "n1", "prolog", "ok", 0.1)
    metrics.record_run(cfg, "n1", "epilog", "GcpError", 0.1)
    assert sorted(p.name for p in store.root.iterdir()) == before
    assert not list((tmp_path / "textfile").iterdir())


def test_writing_never_fails_a_hook(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, metrics_file=str(tmp_path / "no-such-dir" / "g.prom"))
    NodeStateStore(cfg.state_dir_for("n1")).ensure()
    metrics.record_run(cfg, "n1", "epilog", "ok", 0.1)  # the collector's dir is missing
    bad = _cfg(tmp_path, state_dir=str(tmp_path / "open"))
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    metrics.record_run(bad, "n1", "epilog", "ok", 0.1)  # an untrusted state_dir: nothing
    assert not (tmp_path / "open" / metrics.COUNTS).exists()


def test_damaged_counts_and_journal_lines_start_afresh(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    root = cfg.state_dir_for("n1")
    NodeStateStore(root).ensure()
    (root / metrics.COUNTS).write_text("{not json")
    (root / metrics.JOURNAL).write_bytes(b'{"c": {"x": "y"}, "h": [["prolog", "z"]]}\n{half')
    metrics.record_run(cfg, "n1", "epilog", "ok", 200.0)
    s = _parse(tmp_path / "textfile" / "globus_tmp_n1.prom")
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 1
    assert _value(s, "globus_tmp_hook_duration_seconds_count", hook="prolog") == 0
    assert _value(s, "globus_tmp_hook_duration_seconds_bucket", hook="epilog", le="120.0") == 0
    assert _value(s, "globus_tmp_hook_duration_seconds_bucket", hook="epilog", le="+Inf") == 1


def test_failure_outcomes_are_classes() -> None:
    assert outcome_of(HookTimeout("x")) == "timeout"
    assert outcome_of(PoolExhaustedError("x")) == "PoolExhaustedError"
    assert outcome_of(KeyError("x")) == "KeyError"


def test_label_values_are_escaped(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    NodeStateStore(cfg.state_dir_for("n1")).ensure()
    metrics.record_run(cfg, "n1", "epilog", 'we"ird\\\n', 0.1)
    s = _parse(tmp_path / "textfile" / "globus_tmp_n1.prom")
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome='we"ird\\\n') == 1


def test_the_join_path_journals_without_importing_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hookrunner writes a join's line itself (importing globus_tmp.metrics would cost
    the join path more than the line): the same line metrics.journal_line makes, folded
    in like any other."""
    from globus_tmp import hookrunner

    cfg = _cfg(tmp_path)
    root = cfg.state_dir_for("n1")
    NodeStateStore(root).ensure()
    monkeypatch.delitem(sys.modules, "globus_tmp.metrics")
    hookrunner._record_run(cfg, "n1", "prolog", "ok")
    assert "globus_tmp.metrics" not in sys.modules
    monkeypatch.undo()
    line = (root / metrics.JOURNAL).read_bytes()
    hook, outcome, seconds = line.decode().split()
    assert metrics.journal_line(hook, float(seconds)) == line
    assert (hook, outcome) == ("prolog", "ok") and 0 < float(seconds) < 3600
    metrics.count("gcp_starts_total")
    hookrunner._record_run(cfg, "n1", "prolog", "ok")  # counted something: renders
    s = _parse(tmp_path / "textfile" / "globus_tmp_n1.prom")
    assert _value(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 2
    assert _value(s, "globus_tmp_hook_duration_seconds_count", hook="prolog") == 2


def test_an_epilog_that_only_removed_its_job_renders_at_most_every_render_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from globus_tmp import hookrunner

    cfg = _cfg(tmp_path)
    root = cfg.state_dir_for("n1")
    NodeStateStore(root).ensure()
    path = tmp_path / "textfile" / "globus_tmp_n1.prom"
    monkeypatch.delitem(sys.modules, "globus_tmp.metrics")  # this run counted nothing
    hookrunner._record_run(cfg, "n1", "epilog", "ok")  # never rendered: renders
    assert path.exists()
    del sys.modules["globus_tmp.metrics"]
    hookrunner._record_run(cfg, "n1", "epilog", "ok")  # rendered just now: journals
    assert "globus_tmp.metrics" not in sys.modules
    assert (root / metrics.JOURNAL).read_bytes().split(b"\n")[1].startswith(b"epilog ok ")
    old = time.time() - hookrunner.RENDER_EVERY - 1
    os.utime(root / metrics.COUNTS, (old, old))
    hookrunner._record_run(cfg, "n1", "epilog", "ok")  # the last render is old: renders
    monkeypatch.undo()
    s = _parse(path)
    assert _value(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 3


def test_a_textfile_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """Another user could swap the file between its write and the rename."""
    cfg = _cfg(tmp_path)
    NodeStateStore(cfg.state_dir_for("n1")).ensure()
    textfile = tmp_path / "textfile"
    for mode in (0o777, 0o1777, 0o775):
        textfile.chmod(mode)
        problem = metrics.record_run(cfg, "n1", "epilog", "ok", 0.1)
        assert problem is not None and "writable by others" in problem, mode
        assert f"chmod go-w {textfile}" in problem and "\n" not in problem
        assert not list(textfile.iterdir()), "nothing written there"
    os.chown(textfile, 65534, 65534)
    textfile.chmod(0o755)
    assert "writable by others" in (metrics.record_run(cfg, "n1", "epilog", "ok", 0.1) or "")
    os.chown(textfile, 0, 0)
    assert metrics.record_run(cfg, "n1", "epilog", "ok", 0.1) is None
    samples = _parse(textfile / "globus_tmp_n1.prom")
    runs = _value(samples, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok")
    assert runs == 5, "the refused runs were still counted"
