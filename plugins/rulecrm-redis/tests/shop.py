"""A small shop for the redis source's tests: a partitioned state, a rule per order, events to publish."""
from __future__ import annotations

import json
import sqlite3

from rulecrm_redis import plugin as redis_plugin

from rulecrm import plugins
from rulecrm.app.runner import Runner
from rulecrm.state.partitioned import PartitionedState, shard_of
from rulecrm.testing import files

PARTITIONS = 4
T0 = 1772359200.0  # 2026-03-01T10:00:00Z: the runners' wall clock


def make_shop(tmp_path, partitions=PARTITIONS):
    """Rules (a `thanks` per order to a jsonl channel), a partitioned state, and the channel's file."""
    sends = tmp_path / "sends.jsonl"
    rules = files.write_rules(tmp_path, f"""
        shop: {{timezone: UTC}}
        channels:
          out: {{type: jsonl, path: "{sends}"}}
        lifecycle: {{dormant_after: 3650d, churned_after: 7300d}}
        rules:
          - id: thanks
            on: order.placed
            notify: {{to: customer, channel: out, kind: service, template: "thanks {{event.id}}"}}
    """)
    state = tmp_path / "state"
    PartitionedState.create(state, partitions)
    return rules, state, sends


def order(n, customer=None, *, with_id=True) -> str:
    record = {"type": "order.placed", "customer_id": customer or f"c-{n % 29}",
              "at": f"2026-03-01T09:{n // 60 % 60:02d}:{n % 60:02d}Z", "data": {"sku": f"sku-{n % 3}"}}
    if with_id:
        record["id"] = f"o-{n}"
    return json.dumps(record)


def manager():
    """The built-in plugins and this one (as its entry point would load it)."""
    found = plugins.build_plugin_manager(load_entry_points=False)
    found.register(redis_plugin)
    return found


def start_runner(rules, state, url, *, shards=None, messages=None, batch_size=500):
    runner = Runner(rules, str(state), sources=[f"redis:{url}"], manager=manager(), clock=lambda: T0,
                    backend_name="python", on_message=(messages if messages is not None else []).append,
                    reload_interval=0, batch_size=batch_size, shards=shards)
    runner.start()
    return runner


def query(path, sql, *args):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql, args).fetchall()


def shard_paths(state):
    return PartitionedState.open(str(state)).shard_paths()


def position(path, prefix="rulecrm:events"):
    rows = query(path, "SELECT value FROM meta WHERE key = ?", f"source:redis:{prefix}")
    return json.loads(rows[0][0]) if rows else None


def shard(customer, partitions=PARTITIONS):
    return shard_of(customer, partitions)
