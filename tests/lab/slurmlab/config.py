"""The configuration files the lab writes: slurm.conf, globus-tmp.conf, job_container.conf,
plugstack.conf, and the GCP wrapper scripts that carry the emulator's knobs.

All of them live under ``<root>/etc`` and ``<root>/bin``; the ones tests rewrite while the
lab runs (globus-tmp.conf, plugstack.conf) are written beside and renamed, so a hook or a
slurmstepd never reads half a file.
"""

from __future__ import annotations

import json
import shlex
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from .layout import (
    CLONENS_EPILOG,
    CLONENS_INIT,
    GCP_WRAPPER,
    HOOK_SCRIPTS,
    LAB_CLUSTER,
    LAB_GLOBUS_CLIENT_ID,
    NODE_STATE_MOUNT,
    PRIVATETMP_HELPER,
    LabBase,
)

TomlValue = Union[str, int, float, bool, Sequence[str], Mapping[str, str]]


def toml_value(value: TomlValue) -> str:
    # JSON string escapes are valid TOML basic-string escapes for everything we write.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):  # an inline table: { key = "value", ... }
        return "{ " + ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in value.items()) + " }"
    return "[" + ", ".join(json.dumps(str(v)) for v in value) + "]"


class ConfigWriter(LabBase):
    """Writes the lab's config files and GCP wrappers from its settings."""

    def write_gcp_wrapper(self, name: str = GCP_WRAPPER, **env: Union[str, int, float]) -> Path:
        """Write ``<root>/bin/<name>``: sets the emulator's knobs, then execs the emulator.

        The hooks start GCP with a clean environment, so knobs such as
        ``GCP_EMULATOR_STATUS_INTERVAL`` or ``GCP_EMULATOR_MODE`` can only reach the emulator
        through a wrapper like this one. Point ``gcp_path`` at the returned path.
        While the lab's API emulator runs, ``GCP_EMULATOR_GLOBUS_API`` is set to it unless
        ``env`` says otherwise (an empty value: a GCP that never connects out).
        """
        knobs: dict[str, str] = {
            "GCP_EMULATOR_STATUS_INTERVAL": str(self.status_interval),
            "GCP_EMULATOR_CONNECT_DELAY": str(self.connect_delay),
        }
        url = self._globus_api_url()
        if url:  # every GCP connects out to the lab's Globus; -setup redeems keys there
            knobs["GCP_EMULATOR_GLOBUS_API"] = url
        knobs.update({k: str(v) for k, v in env.items()})
        lines = [
            "#!/bin/sh",
            "# Written by tests/lab/slurmlab: the GCP emulator with lab knobs.",
        ]
        lines.append("PATH=/usr/bin:/bin; export PATH")
        lines += [f"{k}={shlex.quote(v)}; export {k}" for k, v in sorted(knobs.items())]
        lines.append(f'exec {shlex.quote(str(self.emulators_dir / GCP_WRAPPER))} "$@"')
        path = self.bin_dir / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)
        return path

    def write_globus_tmp_conf(self, **overrides: Optional[TomlValue]) -> Path:
        """(Re)write the hooks' globus-tmp.conf; an override of None drops that key.

        The hooks read it on every call, so a test can switch e.g. ``gcp_path`` to a broken
        program between jobs without restarting anything. While the lab's API emulator
        runs, the defaults point the hooks and the CLI at it (``globus_client_id``,
        ``globus_service_urls``) and keep ``linger_unverified`` short.
        """
        conf: dict[str, Optional[TomlValue]] = {
            "gcp_path": str(self.bin_dir / GCP_WRAPPER),
            "state_dir": f"{NODE_STATE_MOUNT}/%n",
            "user_dir": "~/.globus-tmp",
            "exposed_paths": ["/tmp"],
            "start_timeout": 30,
            "stop_grace": 10,
            "linger_max": 120,
            "idle_linger": 0,  # GCP stops once idle, as most tests expect; theirs set it
            "linger_poll_seconds": 2,
            "on_failure": "continue",
        }
        if self.slurm.prefix is not None:  # a Slurm built under a prefix, as many sites have
            conf["slurm_bin_dir"] = str(self.slurm.bin_dir)
        url = self._globus_api_url()
        if url:
            conf["linger_unverified"] = 5
            conf["globus_client_id"] = LAB_GLOBUS_CLIENT_ID
            conf["globus_service_urls"] = {"transfer": url + "/", "auth": url + "/"}
        conf.update(overrides)
        text = "# Written by tests/lab/slurmlab for the lab cluster.\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in conf.items() if v is not None
        )
        tmp = self.globus_tmp_conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.globus_tmp_conf)  # atomic: a hook never reads half a file
        return self.globus_tmp_conf

    def _write_slurm_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        container = ""
        if self.job_container:
            # job_container.conf has no slurm.conf key: Slurm reads it beside slurm.conf.
            # 25.11 renamed the interface; a site on 25.11 writes the new key.
            kind = (
                "NamespaceType=namespace/tmpfs"
                if self.slurm.namespace_interface
                else "JobContainerType=job_container/tmpfs"
            )
            container = f"{kind}\nPlugStackConfig={self.plugstack_conf}\n"
        hooks = ""
        if self.hooks:
            hooks = "".join(f"{k}={self.venv_bin / v}\n" for k, v in HOOK_SCRIPTS.items())
        hooks = container + hooks
        nodes = "".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.node_port(n)} "
            f"CPUs={self.cpus_per_node} RealMemory=1000 State=UNKNOWN\n"
            for n in self.nodes
        )
        text = f"""\
# Written by tests/lab/slurmlab: a {len(self.nodes)}-node lab cluster on one machine.
ClusterName={LAB_CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.spool_dir}/ctld
SlurmdSpoolDir={self.spool_dir}/slurmd.%n
SlurmctldPidFile={self.run_dir}/slurmctld.pid
SlurmdPidFile={self.run_dir}/slurmd.%n.pid
SlurmctldLogFile={self.slurmctld_log}
SlurmdLogFile={self.log_dir}/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=20
TCPTimeout=2
KillWait=5
InactiveLimit=0
MinJobAge=600
JobRequeue=0
MailProg=/bin/true
PrologFlags={self.prolog_flags}
PrologEpilogTimeout=180
{hooks}{nodes}PartitionName=lab Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
"""
        self.slurm_conf.write_text(text)
        self.slurm_conf.chmod(0o644)

    def _write_job_container_confs(self) -> None:
        """job_container.conf and plugstack.conf beside slurm.conf when on; neither when off.

        The plugin and BasePath must be ready first (:meth:`Installer._prepare_job_container`).
        """
        if not self.job_container:
            self.plugstack_conf.unlink(missing_ok=True)
            self.job_container_conf.unlink(missing_ok=True)
            return
        clonens = ""
        if self.clonens:
            # What docs/ADMIN.md tells a 24.11+ site; the waits fit the helper's budget.
            # The scripts are options of the BasePath line: on a line of their own
            # Slurm ignores them.
            clonens = (
                f" CloneNSScript={self.bin_dir / CLONENS_INIT}"
                f" CloneNSEpilog={self.bin_dir / CLONENS_EPILOG}"
                "\nCloneNSScript_Wait=30\nCloneNSEpilog_Wait=60"
            )
            wrappers = ((CLONENS_INIT, "clonens-init"), (CLONENS_EPILOG, "clonens-epilog"))
            for name, command in wrappers:
                wrapper = self.bin_dir / name
                wrapper.write_text(
                    f"#!/bin/sh\n# Written by tests/lab/slurmlab (slurm-conf-snippets/{name})\n"
                    f"exec {shlex.quote(str(self.venv_bin / PRIVATETMP_HELPER))} {command}\n"
                )
                wrapper.chmod(0o755)
        self.job_container_conf.write_text(
            "# Written by tests/lab/slurmlab: a private /tmp per job (a build with several\n"
            "# slurmd per host, Debian's and the lab's, appends /<node> to BasePath itself).\n"
            f"AutoBasePath=true\nBasePath={self.job_tmp_base}{clonens}\n"
        )
        self.job_container_conf.chmod(0o644)
        self.write_plugstack_conf()

    def write_plugstack_conf(self) -> Path:
        """(Re)write plugstack.conf: the plugin with :attr:`spank_helper_path` and the timeout.

        Each slurmstepd reads it when it starts, so a new helper applies to the next job
        without restarting anything.
        """
        line = f"optional {self.spank_plugin} helper={self.spank_helper_path}"
        if self.spank_timeout is not None:
            line += f" timeout={self.spank_timeout:g}"
        if self.clonens:  # job_container.conf's CloneNS scripts export instead
            line = "# (CloneNSScript/CloneNSEpilog in job_container.conf instead)"
        tmp = self.plugstack_conf.with_suffix(".tmp")
        tmp.write_text(f"# Written by tests/lab/slurmlab.\n{line}\n")
        tmp.chmod(0o644)
        tmp.replace(self.plugstack_conf)
        return self.plugstack_conf
