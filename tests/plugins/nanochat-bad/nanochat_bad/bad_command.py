"""A command hook that raises (after adding a command)."""

import click

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_commands(cli):
    """Add a command, then raise."""

    @cli.command("half-added")
    def half_added() -> None:
        click.echo("should not be reachable")

    raise ValueError("bad-command could not add its commands")
