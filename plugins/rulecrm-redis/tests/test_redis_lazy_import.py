"""rulecrm loads this plugin for every command (`check` included): loading it must not import redis-py."""
from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def test_loading_the_entry_point_leaves_redis_unimported():
    code = "import sys, rulecrm_redis.plugin; print('redis' in sys.modules, 'rulecrm_redis.source' in sys.modules)"
    assert _run(code) == "False False"


def test_the_public_names_are_the_same_objects_once_loaded():
    code = ("import rulecrm_redis as r\n"
            "from rulecrm_redis import source, publish as p, address\n"
            "assert r.RedisStreamSource is source.RedisStreamSource\n"
            "assert p is r.publish is sys.modules['rulecrm_redis.publish'].publish and callable(p)\n"
            "assert r.parse_address is address.parse_address and r.StreamAddress is address.StreamAddress\n"
            "assert set(r.__all__) <= set(dir(r)) | {'RedisStreamSource'}\n"
            "print('ok')")
    assert _run("import sys\n" + code) == "ok"
