"""The channels rulecrm ships: console, jsonl and memory, registered through the same hook as any plugin."""
from __future__ import annotations

import json
import sys
import threading

from rulecrm.channels import DELIVERED, ChannelType, Delivery, Setting
from rulecrm.hookspecs import hookimpl


class ConsoleChannel:
    """One line per message on stdout: `[channel] address: text`."""

    def __init__(self, config, stream=None):
        self.name = config.name
        self._stream = stream
        self._lock = threading.Lock()  # concurrent sends print whole lines

    def send(self, message) -> Delivery:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(f"[{message.channel}] {message.address}: {message.text}\n")
            stream.flush()
        return Delivery(DELIVERED)

    def close(self) -> None:
        pass


class JsonlChannel:
    """Appends one JSON object per message to the file named by the `path` setting.

    The file stays open from the first send until the channel closes (a reload or the end of the run),
    and each line is flushed as it is written: a reader tailing the file sees every message at once.
    """

    def __init__(self, config):
        self.path = config.get("path") or f"{config.name}.jsonl"
        self._lock = threading.Lock()
        self._handle = None

    def send(self, message) -> Delivery:
        record = {
            "key": message.key, "channel": message.channel, "address": message.address,
            "customer_id": message.customer_id, "rule": message.rule, "kind": message.kind,
            "subject": message.subject, "text": message.text,
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(line)
            self._handle.flush()
        return Delivery(DELIVERED)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class MemoryChannel:
    """Keeps the messages (and tag syncs) it received in its own `sent` list, in order, for tests.

    Each instance has its own list, so two rule sets or two tests never see each other's messages.
    A test reaches an instance through the dispatcher (`dispatcher.channels.instances[name]`), or
    provides a type from its own plugin whose factory keeps what it builds.
    """

    def __init__(self, config):
        self.name = config.name
        self.sent: list = []

    def send(self, message) -> Delivery:
        self.sent.append(message)
        return Delivery(DELIVERED)

    def sync_tags(self, customer_id, address, add, remove) -> Delivery:
        self.sent.append(("tags", customer_id, tuple(add), tuple(remove)))
        return Delivery(DELIVERED)

    def close(self) -> None:
        pass


@hookimpl
def rulecrm_channel_types():
    return [
        ChannelType("console", ConsoleChannel, description="prints each message on stdout", thread_safe=True),
        ChannelType("jsonl", JsonlChannel, settings=(Setting("path", help="file to append to"),),
                    description="appends each message as a JSON line to a file", thread_safe=True),
        ChannelType("memory", MemoryChannel, supports_tags=True, description="keeps messages in memory (tests)",
                    thread_safe=True),
    ]
