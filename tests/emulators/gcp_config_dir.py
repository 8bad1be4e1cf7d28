"""Create a realistic, already set-up Globus Connect Personal config dir.

Why: tests and the Slurm lab need users with a "pool" of registered GCP endpoints
without running ``-setup`` against Globus. The layout follows docs/GCP.md#config-dir
(``DIR/lta/`` with
``client-id.txt`` holding the endpoint UUID and the other files a real setup writes), with
the permissions the GCP emulator checks at ``-start``: dirs 0700, key files 0600, all
owned by the user. File contents other than ``client-id.txt`` are dummies: nothing
parses them, but their presence and modes are part of what clients may rely on.

Stdlib only, Python 3.9+: it is also imported by the emulator's ``-setup``.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

KEY_FILES = ("ftp-key2.pem", "client-key.pem", "relay-anonymous-key.pem")


def _pem(kind: str) -> str:
    """Dummy PEM block (random bytes; real keys would need more than the stdlib)."""
    body = base64.encodebytes(os.urandom(192)).decode("ascii")
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n"


def _write(path: Path, text: str, mode: int, uid: int, gid: int) -> None:
    """Write with the final mode from the first byte (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def _mkdir(path: Path, uid: int, gid: int) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    os.chown(path, uid, gid)


def create_config_dir(dir: Path, uid: int, gid: int, endpoint_id: str | None = None) -> str:
    """Make ``dir/lta/`` as a finished GCP setup would; return the endpoint id.

    ``endpoint_id`` defaults to a fresh uuid4. Everything is chowned to ``uid:gid``
    (callers are root in tests; a user calling it for itself passes its own ids).
    Existing files are overwritten, so a dir can be re-made for another endpoint.
    """
    endpoint_id = str(uuid.UUID(endpoint_id)) if endpoint_id else str(uuid.uuid4())
    dir = Path(dir)
    lta = dir / "lta"
    _mkdir(dir, uid, gid)
    _mkdir(lta, uid, gid)
    try:
        import pwd

        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    dn = f"/C=US/O=Globus Consortium/OU=Globus Connect User/CN={endpoint_id}"
    files = {
        "client-id.txt": (f"{endpoint_id}\n", 0o644),
        "gridmap": (f'"{dn}" {user}\n', 0o644),
        "config": (
            "[General]\n"
            "FirstRun = false\n"
            f"EndpointId = {endpoint_id}\n"
            "RelayServer = relay.globusonline.org:2223\n",
            0o644,
        ),
        "ftp-cert2.pem": (_pem("CERTIFICATE"), 0o644),
        "ftp-key2.pem": (_pem("RSA PRIVATE KEY"), 0o600),
        "client-key.pem": (_pem("RSA PRIVATE KEY"), 0o600),
        "relay-anonymous-key.pem": (_pem("RSA PRIVATE KEY"), 0o600),
        "relay-known-hosts.txt": ("relay.globusonline.org ssh-rsa AAAAB3NzaC1yc2E= dummy\n", 0o644),
        "register.log": (f"registered endpoint {endpoint_id} (gcp emulator fixture)\n", 0o644),
    }
    for name, (text, mode) in files.items():
        _write(lta / name, text, mode, uid, gid)
    return endpoint_id
