"""Where `rulecrm run`'s listeners (the http source, `--metrics`) may bind: `HOST:PORT`, loopback unless allowed.

Neither endpoint has authentication, so each binds a loopback address (`127.0.0.1`, `::1`,
`localhost`) unless `--allow-remote` says a firewall or an authenticating proxy stands in front.
"""
from __future__ import annotations

import ipaddress
import re

DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen_address(arg: str, *, allow_remote: bool, what: str, example_port: int) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[::1]:PORT` for IPv6; an empty host is 127.0.0.1).

    Raises ValueError with a message starting with `what` when the text is not HOST:PORT, or when
    the host is not a loopback address and `allow_remote` is false.
    """
    host, _, port = arg.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f"{what}: expected HOST:PORT such as {DEFAULT_HOST}:{example_port}, found {arg!r}")
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"{what}: {host} is not a loopback address; the endpoint has no authentication, "
            f"so bind {DEFAULT_HOST} (behind your own proxy) or pass --allow-remote on purpose"
        )
    return host, int(port)
