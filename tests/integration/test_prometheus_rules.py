"""contrib/prometheus/swcmp-rules.yml: valid for Prometheus' own promtool, its unit tests pass,
and every swcmp metric it names is one swcmp writes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swcmp.metrics import _FAMILIES
from testpaths import REPO

CONTRIB = REPO / "contrib" / "prometheus"
RULES = CONTRIB / "swcmp-rules.yml"
RULE_TESTS = CONTRIB / "swcmp-rules.test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(Debian package prometheus; scripts/test installs it)")


def promtool(*args: str, cwd: Path = CONTRIB) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


@needs_promtool
def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 12 rules found" in res.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    res = promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
@pytest.mark.parametrize(("alert", "good", "bad"), [
    # the failing-renewals threshold off by one
    ("SwcmpRenewalsFailing", "swcmp_consecutive_failures >= 3",
     "swcmp_consecutive_failures >= 4"),
    # the CA-life alert waiting a day longer, or firing at the first failure
    ("SwcmpCALifeFailing", "        for: 2d\n", "        for: 3d\n"),
    ("SwcmpCALifeFailing", "        for: 2d\n", "        for: 1h\n"),
    # the damaged-journal alert looking at the wrong value
    ("SwcmpRenewalJournalDamaged", "swcmp_renewal_journal_damaged == 1",
     "swcmp_renewal_journal_damaged == 2"),
    # the stale-metrics alert waiting a week, or firing at a timer's 12 hours
    ("SwcmpMetricsStale", "swcmp_metrics_written_timestamp_seconds > 86400",
     "swcmp_metrics_written_timestamp_seconds > 7 * 86400"),
    ("SwcmpMetricsStale", "swcmp_metrics_written_timestamp_seconds > 86400",
     "swcmp_metrics_written_timestamp_seconds > 0"),
    # the abandoned-transaction alert missing the counter's first appearance
    ("SwcmpRenewalTransactionAbandoned", "} offset 1d", "} offset 1m"),
])
def test_rule_tests_can_fail(tmp_path: Path, alert: str, good: str, bad: str) -> None:
    # The same tests against rules with a changed threshold: they fail.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    broken = RULES.read_text().replace(good, bad)
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    res = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert res.returncode != 0 and alert in res.stdout + res.stderr


def test_rules_name_only_metrics_swcmp_writes() -> None:
    # every swcmp_* word in the file (expressions, annotations, comments)
    used = set(re.findall(r"\bswcmp_[a-z_]+", RULES.read_text()))
    written = {name for name, _, _ in _FAMILIES}
    assert used and used <= written, used - written


def test_descriptions_name_the_units_of_both_ways_swcmp_runs() -> None:
    # swcmp runs as `swcmp serve` (swcmp.service) or from swcmp-renew.timer: an alert
    # that sends the operator to systemd must name units shipped in contrib/systemd and,
    # naming one way, the other too (on a timer install swcmp.service is inactive by design)
    shipped = {p.name.rsplit(".", 1)[0] for p in (REPO / "contrib" / "systemd").iterdir()}
    checked = 0
    for line in RULES.read_text().splitlines():
        if "description:" not in line or not re.search(r"systemctl|journalctl", line):
            continue
        units = set(re.findall(r"systemctl status ((?:[\w.@-]+ ?)+)", line))
        units = {u for group in units for u in group.split()}
        units |= set(re.findall(r"-u ([\w.@-]+)", line))
        names = {u.removesuffix(".service").removesuffix(".timer") for u in units}
        assert names and names <= shipped, (names - shipped, line)
        assert {"swcmp", "swcmp-renew"} <= names, line
        checked += 1
    assert checked
