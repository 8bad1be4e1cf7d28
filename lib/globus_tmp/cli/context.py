"""What every command gets: a :class:`Command` row of the table and the :class:`Context`
of the calling user (configuration, identity, globus-tmp dir, Globus session)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, load_config
from ..job import UserIdentity

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ..globusapi import GlobusSession
    from ..pool import EndpointPool
    from .output import Output


class Context:
    """The calling user's configuration, identity and globus-tmp dir."""

    def __init__(self, cfg: Config, user: UserIdentity) -> None:
        self.cfg = cfg
        self.user = user
        self.user_dir: Path = cfg.user_dir_for(user)

    @classmethod
    def current(cls) -> Context:
        """The context of this process (files it creates are the user's alone), once its
        ``user_dir`` is made and provably the user's alone (:mod:`globus_tmp.userdir`)."""
        from ..userdir import ensure_user_dir

        ctx = cls(load_config(), UserIdentity.current())
        os.umask(0o077)
        ensure_user_dir(ctx.user_dir, ctx.user.home)
        return ctx

    def session(self, interactive: bool = False) -> GlobusSession:
        """The user's Globus session (imports globus-sdk: commands that talk to Globus)."""
        from ..globusapi import GlobusSession

        return GlobusSession(self.cfg, self.user_dir, interactive)

    def pool(self) -> EndpointPool:
        from ..pool import EndpointPool

        return EndpointPool(self.user_dir)

    @property
    def logged_in(self) -> bool:
        return (self.user_dir / "tokens.db").exists()


class Command:
    """One row of the command table: its name, its one-line help, its arguments, and
    what it does (``run`` returns an :class:`Output`; it prints nothing itself)."""

    __slots__ = ("configure", "help", "json_dest", "name", "run")

    def __init__(
        self,
        name: str,
        help: str,
        run: Callable[[Context, argparse.Namespace], Output],
        configure: Callable[[argparse.ArgumentParser], None] | None = None,
        json_dest: str | None = None,
    ) -> None:
        self.name = name
        self.help = help
        self.run = run
        self.configure = configure
        self.json_dest = json_dest
        """The argument that asks for ``--json`` output, if the command has one."""

    def wants_json(self, args: argparse.Namespace) -> bool:
        return bool(self.json_dest and getattr(args, self.json_dest))
