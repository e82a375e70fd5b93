"""`rulecrm serve`: the ops console over a state and its rules (docs/console.md)."""
from __future__ import annotations

import contextlib
import os
import signal

import click

from rulecrm.cli.context import pass_cli_context
from rulecrm.cli.util import EXIT_ERROR, EXIT_OK, echo_err, reported_errors

DEFAULT_LISTEN = "127.0.0.1:8700"


@click.command("serve")
@click.option("--rules", "rules", required=True, type=click.Path(exists=True), help="Rules directory or file.")
@click.option("--state", "state", required=True, type=click.Path(exists=True),
              help="State file of a replay or run, or a partitioned state directory (read without the runner lock).")
@click.option("--listen", "listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Where to serve the console; loopback unless --allow-remote.")
@click.option("--allow-remote", is_flag=True,
              help="Let --listen bind a non-loopback address (put TLS and your own authentication in front).")
@click.option("--token-env", "token_env", default=None, metavar="NAME",
              help="Environment variable holding the token that allows changes; without it the console is read-only.")
@pass_cli_context
def serve_command(context, rules, state, listen, allow_remote, token_env):
    """Serve the ops console: overview, customers, rules, outbox and dead letters, in a browser."""
    from rulecrm.console import INSTALL_HINT, missing_extra

    missing = missing_extra()
    if missing is not None:
        echo_err(f"error: rulecrm serve needs the console extra ({missing} is not installed): {INSTALL_HINT}")
        return EXIT_ERROR
    from rulecrm.console.app import Console
    from rulecrm.console.reading import StateFiles
    from rulecrm.console.security import Guard
    from rulecrm.console.server import make_server
    from rulecrm.errors import UsageError
    from rulecrm.listen_address import parse_listen_address

    with reported_errors():
        try:
            host, port = parse_listen_address(listen, allow_remote=allow_remote, what="--listen", example_port=8700)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        token = None
        if token_env is not None:
            token = os.environ.get(token_env)
            if not token:
                raise UsageError(f"--token-env {token_env}: the environment variable {token_env} is not set or "
                                 "empty; set it to the token, or leave --token-env out for a read-only console")
        StateFiles.open(state, thorough=True)  # a missing, damaged or foreign state: one clear line before serving
        console = Console(rules_path=rules, state_path=state, manager=context.manager, guard=Guard(token))
        sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    mode = "changes need the token" if token is not None else "read-only"
    echo_err(f"console on http://{shown}:{sock.getsockname()[1]}/ ({mode}); Ctrl-C stops it")
    server = make_server(console, host, port)
    try:
        with _stop_signals_end_cleanly(server):
            server.run(sockets=[sock])  # until Ctrl-C or SIGTERM, which uvicorn handles while it runs
    finally:
        sock.close()
    return EXIT_OK


@contextlib.contextmanager
def _stop_signals_end_cleanly(server):
    """SIGTERM and Ctrl-C end the process with status 0: before uvicorn runs, at once; once it stopped
    on one, uvicorn raises the signal again for the previous handler, which this one is (and ignores)."""

    def handler(signum, frame):
        if not server.should_exit:
            raise SystemExit(EXIT_OK)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _bind(host: str, port: int):
    """The listening socket, bound here so that a port in use is one clear line (and port 0 gets its number)."""
    import socket

    from rulecrm.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock
