"""Emulator of the Globus Transfer (v0.10) and Auth (v2) APIs, as globus-sdk 4.x uses them.

Why it exists: the project's hooks and tools talk to Globus through globus-sdk, and tests
cannot reach Globus. This service answers on 127.0.0.1 in the documents' real shapes
(checked against ``globus_sdk.testing`` recorded responses by the test suite; the shapes
and errors globus-tmp relies on: docs/GCP.md#transfer-api onwards), so that
``GLOBUS_SDK_SERVICE_URL_TRANSFER`` / ``GLOBUS_SDK_SERVICE_URL_AUTH`` pointing at it is
enough for unmodified globus-sdk code (and globus-cli) to work: token refresh, 401
handling, retries of 429/5xx with ``Retry-After``, paginators.

Beyond answering requests it emulates what makes Globus Connect Personal (GCP) matter to
the project: a GCP endpoint is only usable while its GCP process is connected. GCP
processes "connect out" through the emulator-only ``/_emulator/gcp/...`` routes (see
:class:`~globus_api.link.GcpLink`, the client side), and tasks really move bytes through
them, in chunks, resumable: while a GCP is away a task stays ACTIVE with
``GC_NOT_CONNECTED`` events and resumes when it returns, until the task's deadline.
"Served collections" are plain directories the service itself hosts, standing in for
Globus Connect Server.

Stdlib only, Python 3.9+: it runs under Debian's /usr/bin/python3 next to the GCP
emulator. Layout, by concern (as globus-sdk splits its services):

* :mod:`.common` constants and formats; :mod:`.errors`; :mod:`.fileops` local file
  operations; :mod:`.client` stdlib clients; :mod:`.link` the GCP side -- the light part,
  imported by the GCP emulator in user processes;
* :mod:`.signing` RSA for id_tokens; :mod:`.tokens` identities and tokens;
  :mod:`.shapes` document templates; :mod:`.filters` Transfer's filter languages;
  :mod:`.faults`; :mod:`.hub` GCP sessions; :mod:`.backends`; :mod:`.engine` tasks;
  :mod:`.state` the shared state; :mod:`.routing` and :mod:`.routes` (auth, endpoints,
  tasks, operations, admin, gcp); :mod:`.server` HTTP; :mod:`.cli` the command line.

This module stays empty at import: the names below load their module on first access,
so ``import globus_api`` (or ``from globus_api.link import GcpLink``) does not start the
service's machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "common": (
        "ADMIN_IDENTITY",
        "AUTH_RS",
        "DEFAULT_CHUNK",
        "DEFAULT_DEADLINE",
        "DEFAULT_TOKEN_LIFETIME",
        "LISTEN_HOST",
        "TRANSFER_RS",
        "TRANSFER_SCOPE",
        "JSONDict",
        "b32_username",
        "iso",
        "iso_space",
        "parse_time",
        "request_id",
    ),
    "errors": ("ApiError", "Disconnected", "OpError"),
    "fileops": (
        "WRITE_OPS",
        "checksum_path",
        "list_path",
        "make_dirs",
        "read_chunk",
        "run_file_op",
        "stat_path",
        "write_chunk",
    ),
    "client": (
        "USER_APP_SCOPES",
        "AdminClient",
        "HttpError",
        "http_call",
        "redeem_setup_key",
        "seed_token_storage",
    ),
    "link": ("GcpLink", "PathRule", "compile_path_rules"),
    "signing": ("RsaKey",),
    "tokens": ("TokenIssuer", "scope_resource_server", "split_scopes"),
    "faults": ("DEFAULT_FAULT_CODES", "Fault"),
    "hub": ("GcpHub",),
    "backends": ("Backend", "GcpBackend", "ServedBackend"),
    "engine": ("TransferEngine",),
    "state": ("Emulator",),
    "routing": ("Request", "Response", "Route", "json_response"),
    "server": ("EmulatorServer",),
    "cli": ("main",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load ``name`` from its module on first access (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
