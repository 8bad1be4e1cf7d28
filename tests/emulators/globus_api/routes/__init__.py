"""Route groups, one per service or concern, in the order routes are matched."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..routing import RouteGroup
from .admin import AdminRoutes
from .auth import AuthRoutes
from .endpoints import EndpointRoutes
from .gcp import GcpLinkRoutes
from .operations import OperationRoutes
from .tasks import TaskRoutes

if TYPE_CHECKING:
    from ..state import Emulator


def all_route_groups(emu: Emulator) -> list[RouteGroup]:
    return [
        AuthRoutes(emu),
        EndpointRoutes(emu),
        TaskRoutes(emu),
        OperationRoutes(emu),
        AdminRoutes(emu),
        GcpLinkRoutes(emu),
    ]
