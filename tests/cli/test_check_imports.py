"""`rulecrm check` imports what checking needs and nothing more (bench B5: it runs on every save and
in pre-commit hooks). The installed plugins are loaded as on any command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "rules" / "tea-shop"

# Each is imported only by the commands that use it; none of them checks a rule file.
NOT_FOR_CHECK = (
    "redis",  # the redis source and `publish` (rulecrm-redis)
    "rulecrm_redis.source",
    "urllib.request",  # the webhook and WeCom channels' HTTP calls
    "http.client",
    "smtplib",  # the smtp channel
    "ssl",
    "email.policy",
    "hashlib",  # loads OpenSSL: webhook signatures, e-mail Message-IDs, event ids and shard hashes
    "hmac",
    "jinja2",  # reports and the console
    "starlette",
    "uvicorn",
    "dask",
    "distributed",
    "prometheus_client",  # run --metrics
    "hypothesis",  # rulecrm test
    "durable_rules",  # the durable backend
    "durable",
    "tqdm",  # replay's progress bar
    "http.server",  # the http source
    "sqlite3",  # state stores
    "rulecrm.events",  # reading events
    "rulecrm.sources.reader",
    "rulecrm.engine",
    "rulecrm.app.session",
    "rulecrm.backends",
    "rulecrm.app.stopping",  # replay's, diff's and run's stop signals
)

# Runs the real command line in a fresh interpreter, then lists the modules it loaded.
PROGRAM = """
import json, sys
sys.argv = ["rulecrm", "check", sys.argv[1]]
from rulecrm.cli import entry
try:
    entry()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_check_leaves_the_other_commands_modules_unimported():
    result = subprocess.run([sys.executable, "-c", PROGRAM, str(RULES)], capture_output=True, text=True,
                            timeout=120, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0, result.stderr
    loaded = set(report["modules"])
    assert "rulecrm.rulefile.loader" in loaded and "rulecrm_redis.plugin" in loaded  # it did check, with plugins
    unwanted = sorted(name for name in loaded if name in NOT_FOR_CHECK or name.split(".")[0] in NOT_FOR_CHECK)
    assert unwanted == []
