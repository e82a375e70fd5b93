"""Defaults of the smtp channel's settings, in a module of their own: the plugin declares them in
its help texts without loading the channel."""
from __future__ import annotations

DEFAULT_PORT = 25
SMTPS_PORT = 465
DEFAULT_TIMEOUT = 30.0
