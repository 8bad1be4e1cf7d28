"""Users' GCP pools: set up (the real ``globus-tmp-endpoint setup``), inspected, cleared.

A pool is ``~user/.globus-tmp/endpoints/ep1..epN``, each a GCP config dir; which node holds
which entry is in the entries' lease files, written by the hooks.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from typing import Any

from .globus import GlobusParts
from .layout import ENDPOINT_CLI, LAB_CLUSTER
from .shell import LabError


class Pools(GlobusParts):
    """Making, reading and clearing the users' pools of GCP endpoints."""

    def make_pool(self, user: str, n: int) -> list[str]:
        """Give ``user`` a pool of ``n`` set-up GCP config dirs ep1..epN; return their ids.

        With the lab's Globus API emulator (the default), the real way: the user is logged
        in (:meth:`login`) and runs ``globus-tmp-endpoint setup --count n``, which creates
        the endpoints in the emulated Globus and runs GCP's ``-setup`` for each, so their
        GCPs can connect. Without it (or without the hooks' venv), the emulator's
        ``create_config_dir`` makes what a ``-setup`` leaves behind, for ids no Globus
        knows. Either way everything is owned by the user, directories 0700.
        """
        self.clear_pool(user)
        if self._globus_api_url() and (self.venv_bin / ENDPOINT_CLI).exists():
            self.login(user)
            self.endpoint_cli(user, "setup", "--count", str(n), check=True, timeout=60 + 15 * n)
            return [self.pool_endpoint_id(user, f"ep{i}") for i in range(1, n + 1)]
        create = self._create_config_dir()
        pw = pwd.getpwnam(user)
        base = self.user_dir(user)
        ids = []
        for d in (base, base / "endpoints"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o700)
        for i in range(1, n + 1):
            ep = base / "endpoints" / f"ep{i}"
            ids.append(str(create(ep, pw.pw_uid, pw.pw_gid)))
            for p in [ep, *ep.rglob("*")]:
                os.lchown(p, pw.pw_uid, pw.pw_gid)
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o700)
        return ids

    def pool_endpoint_id(self, user: str, entry: str) -> str:
        """The endpoint id of a pool entry (``lta/client-id.txt``, as GCP's -setup wrote it)."""
        path = self.pool_dir(user) / entry / "lta" / "client-id.txt"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise LabError(f"pool entry {entry} of {user} has no endpoint id: {exc}") from None

    def leases(self, user: str) -> dict[str, str]:
        """Pool entry -> the node holding its lease (``<cluster>/<node>`` if not this lab's).

        Each entry's lease is its highest ``.lease.<N>`` file (a JSON record: ``held``,
        ``cluster``, ``node``...); a checkout still on the single ``registry.json`` of
        earlier versions is read from there.
        """
        out: dict[str, str] = {}
        try:
            entries = sorted(p for p in self.pool_dir(user).iterdir() if p.is_dir())
        except FileNotFoundError:
            entries = []
        found = False
        for entry in entries:
            gens = [
                int(f.name[len(".lease.") :])
                for f in entry.iterdir()
                if f.name.startswith(".lease.") and f.name[len(".lease.") :].isdigit()
            ]
            if not gens:
                continue
            found = True
            path = entry / f".lease.{max(gens)}"
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise LabError(f"{path} is unreadable: {exc}") from None
            if record.get("held"):
                cluster, node = record.get("cluster", ""), str(record.get("node", ""))
                out[entry.name] = node if cluster in ("", LAB_CLUSTER) else f"{cluster}/{node}"
        registry = self.user_dir(user) / "registry.json"
        if found or not registry.exists():
            return out
        try:
            data = json.loads(registry.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"{registry} is unreadable: {exc}") from None
        return {name: str(lease["node"]) for name, lease in data.get("leases", {}).items()}

    def clear_pool(self, user: str) -> None:
        """Remove the user's whole ``~/.globus-tmp`` (pool, leases, logs, tokens)."""
        shutil.rmtree(self.user_dir(user), ignore_errors=True)

    def _create_config_dir(self) -> Any:
        """Import create_config_dir from the lab's copy of the emulators (no sys.path games)."""
        import importlib.util

        path = self.emulators_dir / "gcp_config_dir.py"
        if not path.exists():
            path = self.repo / "tests" / "emulators" / "gcp_config_dir.py"
        spec = importlib.util.spec_from_file_location("_lab_gcp_config_dir", path)
        if spec is None or spec.loader is None:
            raise LabError(f"cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.create_config_dir
