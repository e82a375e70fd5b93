"""`rulecrm publish --to redis://HOST:PORT/DB --state DIR FILE.jsonl`."""
from __future__ import annotations

import click

from rulecrm.cli.util import EXIT_REJECTED, echo_err, reported_errors


@click.command("publish")
@click.option("--to", "to", required=True, metavar="URL",
              help="Redis server: redis://HOST:PORT/DB, with ?prefix=P for streams other than rulecrm:events:N.")
@click.option("--state", "state", required=True, type=click.Path(),
              help="The state the runners use (a partitioned state directory, or a state file): its number of "
                   "partitions and hash decide each event's stream.")
@click.option("--partitions", "partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Make a new --state directory a partitioned state of N shards, as `rulecrm run --partitions` "
                   "does (an existing one must have N).")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def publish_command(to, state, partitions, events):
    """Send the events of a JSONL file to the Redis stream of each customer's shard.

    A runner of that shard (`rulecrm run --source redis:URL --shards ...`) reads them. Malformed
    lines are reported by line number and not sent; the exit status is then 3.
    """
    from .publish import publish

    with reported_errors():
        with click.open_file(events, "rb") as handle:
            result = publish(handle, to=to, state=state, partitions=partitions)
    name = "stdin" if events == "-" else events
    for line_no, reason in result.rejected:
        echo_err(f"{name}:{line_no}: rejected (not sent): {reason}")
    streams = len(result.streams)
    echo_err(f"published {result.sent} event(s) to {streams} stream{'' if streams == 1 else 's'}"
             + (f"; {len(result.rejected)} line(s) rejected" if result.rejected else ""))
    if result.rejected:
        raise click.exceptions.Exit(EXIT_REJECTED)
