"""``login`` and ``logout``: the user's Globus session (tokens in their globus-tmp dir)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import Command, Context
from .output import Output

if TYPE_CHECKING:
    import argparse


def login(ctx: Context, args: argparse.Namespace) -> Output:
    ctx.session(interactive=True).login()
    return Output(f"logged in; tokens in {ctx.user_dir / 'tokens.db'}")


def logout(ctx: Context, args: argparse.Namespace) -> Output:
    ctx.session().logout()
    return Output("logged out")


COMMANDS = (
    Command("login", "log in to Globus (tokens kept in your globus-tmp dir)", login),
    Command("logout", "revoke and forget your Globus tokens", logout),
)
