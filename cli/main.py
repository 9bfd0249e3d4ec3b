"""The ``runstream`` command; each package contributes its subcommands, lazily."""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute); imported only when the command runs, so that
# a client-only install can run `runstream sync` without the server's extras.
_COMMANDS = {
    "server": ("runstream.ingest.cli", "server_command"),
    "sync": ("runstream.client.cli", "sync_command"),
    "loadtest": ("runstream.loadtest.cli", "loadtest_command"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attribute = _COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="runstream")
def main() -> None:
    """runstream: experiment tracking at the speed training produces metrics."""


if __name__ == "__main__":
    main()
