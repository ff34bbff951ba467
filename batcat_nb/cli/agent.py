"""``batcat agent status|stop``: the warm helper behind fast repeated local runs."""

from __future__ import annotations

import click


@click.group()
def agent() -> None:
    """The warm helper that makes repeated local runs start at once."""


@agent.command("status")
def agent_status() -> None:
    """List the running agents."""
    from ..backends.local import agent as agents

    found = agents.running_agents()
    for path, info in found:
        click.echo(f"{path.stem}  pid {info['pid']}  idle {info.get('idle', 0):.0f}s")
    if not found:
        click.echo("no agent is running")


@agent.command("stop")
def agent_stop() -> None:
    """Stop every running agent (they also stop by themselves after 10 idle minutes)."""
    from ..backends.local import agent as agents

    click.echo(f"stopped {agents.stop_agents()} agent(s)")
