"""Defaults of the webhook channel's settings, in a module of their own: the plugin declares them in
its help texts without loading the channel."""
from __future__ import annotations

DEFAULT_TIMEOUT = 10.0
