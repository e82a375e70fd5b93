"""Files and the real command line for end-to-end tests: a rules directory, an events file, a replay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def write_rules(parent, text: str, name: str = "shop.yaml") -> Path:
    """Write `text` (dedented) as `<parent>/rules/<name>` and return the rules directory."""
    directory = Path(parent) / "rules"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def write_events(path, events) -> Path:
    """Write events (dicts, or lines already as text) as JSONL; a directory gets `events.jsonl`."""
    path = Path(path)
    if path.is_dir():
        path = path / "events.jsonl"
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)) + "\n"
                            for e in events), encoding="utf-8")
    return path


def replay_cli(rules, events, *, workdir, dispatch: bool = False, env=None, timeout: float = 60):
    """Run `rulecrm replay` as a subprocess with its state and `--out` in `workdir`.

    Returns (the completed process, the actions written to `--out` as dicts). `env` adds
    environment variables (e.g. the secrets named by `*_env` settings) to the current ones.
    """
    workdir = Path(workdir)
    out = workdir / "out.jsonl"
    command = [sys.executable, "-m", "rulecrm", "replay", "--rules", str(rules), "--events", str(events),
               "--state", str(workdir / "state.db"), "--out", str(out)]
    if dispatch:
        command.append("--dispatch")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, cwd=workdir)
    actions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    return done, actions
