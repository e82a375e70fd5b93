"""The pytest plugin, in a real pytest session of a small shop project (pytester)."""
from __future__ import annotations

import subprocess
import sys

pytest_plugins = ["pytester"]

RULES = """
shop: {timezone: Asia/Shanghai}
contacts:
  cs: {channel: console, address: cs-group}
rules:
  - id: bad-review
    on: review.created
    when: event.rating <= 2
    notify: {to: cs, template: "bad"}
    escalate:
      unless: review.handled same review_id
      steps:
        - {after: 2h, notify: {to: cs}}
"""

TESTS = '''
from datetime import timedelta
from pathlib import Path

RULES = Path(__file__).parent / "rules"


def test_fixtures_work_together(rulecrm_shop, rulecrm_clock, rulecrm_recording):
    shop = rulecrm_shop(RULES)
    assert shop.clock is rulecrm_clock and shop.recording is rulecrm_recording
    shop.add({"type": "review.created", "customer_id": "c-1", "data": {"review_id": "r1", "rating": 1}})
    assert rulecrm_recording.of(rule="bad-review", kind="notify")[0]["due_at"] == "2026-01-05T17:00:00+08:00"
    shop.tick(timedelta(hours=2))
    assert [a["step"] for a in rulecrm_recording.of(kind="escalate")] == [1]


def test_backend_option(rulecrm_shop, request):
    shop = rulecrm_shop(RULES)
    assert shop.backend_name == (request.config.getoption("rulecrm_backend") or "python")


def test_shops_are_closed_at_teardown(rulecrm_shop):
    rulecrm_shop(RULES)
'''


def make_project(pytester):
    pytester.mkdir("rules")
    (pytester.path / "rules" / "shop.yaml").write_text(RULES, encoding="utf-8")
    pytester.makepyfile(test_shop=TESTS)


def test_fixtures_in_a_shop_project(pytester):
    make_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_backend_option_reaches_the_fixture(pytester):
    make_project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rulecrm-backend", "python", "-k", "backend")
    result.assert_outcomes(passed=1)
    assert "--rulecrm-backend" in pytester.runpytest_subprocess("--help").stdout.str()


def test_no_autouse_fixtures_and_no_import_side_effects(pytester):
    pytester.makepyfile(test_plain="def test_plain(request):\n"
                                   "    assert not any(n.startswith('rulecrm') for n in request.fixturenames)\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    code = ("import sys; from hypothesis import settings; before = settings.default; "
            "import rulecrm.testing.pytest_plugin; "
            "print(sorted(m for m in sys.modules if 'durable' in m), settings.default is before)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[] True", loaded  # no Rete engine loaded, no hypothesis profile changed


LOADED = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('rulecrm', 'hypothesis', 'attrs')))"


def test_the_plugin_module_imports_only_itself_and_its_packages():
    code = "import rulecrm.testing.pytest_plugin; " + LOADED
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['rulecrm', 'rulecrm.testing', 'rulecrm.testing.pytest_plugin']", loaded


def test_a_session_that_uses_no_fixture_loads_no_kit(pytester):
    pytester.makepyfile(test_plain="""
def test_plain():
    import sys
    loaded = sorted(m for m in sys.modules if m.startswith('rulecrm'))
    assert loaded == ['rulecrm', 'rulecrm.testing', 'rulecrm.testing.pytest_plugin'], loaded
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_kit_is_still_there_on_first_use():
    code = ("import rulecrm.testing as kit; names = sorted(kit.__all__); "
            "missing = [n for n in names if getattr(kit, n, None) is None]; print(len(names), missing, "
            "'rulecrm.testing.harness' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "29 [] True", out
