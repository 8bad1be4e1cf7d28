"""``metrics_file`` with the real hooks: one job's Prolog and Epilog, as slurmd runs
them, leave a textfile node_exporter can read that tells the job's story."""

from __future__ import annotations

import stat

from hooksite import Site, drain_processes
from polling import wait_for
from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(
    s: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return s[(name, tuple(sorted({"node": "n1", **labels}.items())))]


def test_prolog_and_epilog_leave_a_readable_textfile(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    textfile = site.root / "textfile"
    textfile.mkdir(mode=0o755)
    site.configure(metrics_file=str(textfile / "globus_tmp.prom"))
    site.prolog("91")
    s = _samples((textfile / "globus_tmp.prom").read_text())
    assert _get(s, "globus_tmp_instances") == 1 and _get(s, "globus_tmp_jobs") == 1
    assert _get(s, "globus_tmp_gcp_starts_total") == 1
    site.epilog("91")
    # no Transfer API here: the drain keeps the idle GCP up for linger_unverified, then
    # stops it and writes the file once more
    site.wait_gcp_stopped()
    wait_for(lambda: not drain_processes(), what="the drain to end")
    path = textfile / "globus_tmp.prom"
    s = _samples(path.read_text())
    assert _get(s, "globus_tmp_gcp_starts_total") == 1
    assert _get(s, "globus_tmp_gcp_stops_total") == 1
    assert _get(s, "globus_tmp_gcp_kills_total") == 0
    assert _get(s, "globus_tmp_drains_started_total") == 1
    assert _get(s, "globus_tmp_instances") == 0
    assert _get(s, "globus_tmp_jobs") == 0 and _get(s, "globus_tmp_drains") == 0
    runs = {
        hook: _get(s, "globus_tmp_hook_runs_total", hook=hook, outcome="ok")
        for hook in ("prolog", "epilog")
    }
    assert runs == {"prolog": 1, "epilog": 1}
    latency = {
        hook: _get(s, "globus_tmp_hook_duration_seconds_count", hook=hook)
        for hook in ("prolog", "epilog")
    }
    assert sum(latency.values()) == 2
    assert _get(s, "globus_tmp_hook_duration_seconds_bucket", hook="prolog", le="+Inf") == 1
    assert _get(s, "globus_tmp_hook_duration_seconds_sum", hook="prolog") > 0
    # the drain that stopped GCP is a run of its own
    assert _get(s, "globus_tmp_hook_runs_total", hook="drain", outcome="ok") == 1
    assert not [
        (k, v)
        for k, v in s.items()
        if k[0] == "globus_tmp_hook_runs_total" and v and dict(k[1])["outcome"] != "ok"
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["globus_tmp.prom"]


def test_joins_and_leaves_only_append_and_the_next_render_folds_them_in(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    textfile = site.root / "textfile"
    textfile.mkdir(mode=0o755)
    site.configure(metrics_file=str(textfile / "globus_tmp.prom"))
    path = textfile / "globus_tmp.prom"
    site.prolog("95")  # starts GCP: renders
    site.prolog("96")  # the join path: one journal line, no render
    site.epilog("95")  # not the last job, rendered a moment ago: one journal line
    journal = (site.state_dir() / "metrics.journal").read_text().splitlines()
    assert [line.split()[:2] for line in journal[1:]] == [["prolog", "ok"], ["epilog", "ok"]]
    s = _samples(path.read_text())
    assert _get(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 1
    assert _get(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 0
    res = site.admin("reconcile")
    assert res.returncode == 0, res.stderr
    s = _samples(path.read_text())
    assert _get(s, "globus_tmp_hook_runs_total", hook="prolog", outcome="ok") == 2
    assert _get(s, "globus_tmp_hook_runs_total", hook="epilog", outcome="ok") == 1
    assert _get(s, "globus_tmp_hook_runs_total", hook="reconcile", outcome="ok") == 1
    assert _get(s, "globus_tmp_hook_duration_seconds_count", hook="prolog") == 2
    assert _get(s, "globus_tmp_jobs") == 1 and _get(s, "globus_tmp_instances") == 1
    assert len((site.state_dir() / "metrics.journal").read_text().splitlines()) == 1


def test_no_metrics_file_no_metrics_state(site: Site) -> None:
    site.users["gtunit1"].make_pool(1)
    site.prolog("97")
    site.prolog("98")
    site.epilog("97")
    names = {p.name for p in site.state_dir().iterdir()}
    assert not {n for n in names if n.startswith("metrics")}
