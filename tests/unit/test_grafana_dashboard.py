"""contrib/grafana/swcmp-dashboard.json: it loads, every query names only metrics swcmp
exports (the families of swcmp.metrics), every panel shows data on the metrics sample
(through scripts/render_dashboard.py's PromQL evaluator, which also draws the docs'
picture), and promtool parses every query where it is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from swcmp import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "contrib" / "grafana" / "swcmp-dashboard.json"
SAMPLE = REPO / "contrib" / "grafana" / "sample.prom"
METRIC = re.compile(r"\bswcmp_[a-z0-9_]+\b")


def exported() -> set[str]:
    """The metric names swcmp writes: its families (counters' samples carry _total)."""
    return {name for name, _kind, _help in metrics._FAMILIES}


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_dashboard", REPO / "scripts" / "render_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries(dash: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append(var["definition"])
    return out


def test_every_query_names_only_metrics_swcmp_exports() -> None:
    dash = dashboard()
    found = {m for q in queries(dash) for m in METRIC.findall(q)}
    assert found, "no swcmp metric in any query"
    assert found <= exported(), sorted(found - exported())


def test_the_panels_the_fleet_page_describes() -> None:
    dash = dashboard()
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dash["panels"]}
    wanted = {
        "Sessions by state": "swcmp_session_state",
        "Days left per session": "swcmp_certificate_not_after_timestamp_seconds",
        "Next renewal in (days)": "swcmp_next_renewal_timestamp_seconds",
        "Failures by kind and failInfo": "swcmp_renewal_failures_total",
        "CA certificate expiry (days)": "swcmp_ca_certificate_not_after_timestamp_seconds",
        "charon drift": "swcmp_charon_certificate_current",
        "HA role": "swcmp_ha_role_info",
        "CA-life failures and damaged journals": "swcmp_ca_life_consecutive_failures",
    }
    for title, metric in wanted.items():
        assert metric in by_title.get(title, ""), title
    for title in wanted:
        assert title in (REPO / "docs" / "fleet.md").read_text(), title


def test_every_panel_shows_data_on_the_sample() -> None:
    r = renderer()
    series, now = r.load_sample(SAMPLE)
    assert {lb["__name__"] for lb, _ in series} <= exported()
    for panel in dashboard()["panels"]:
        values = [v for t in panel["targets"] for v in r.evaluate(t["expr"], series, now)]
        assert values, panel["title"]
    # and the evaluator computes what the query says: days left of gw-ham-1's certificate
    days = r.evaluate('(swcmp_certificate_not_after_timestamp_seconds{instance=~"$instance"}'
                      ' - time()) / 86400', series, now)
    ham = [v for lb, v in days if lb["instance"] == "gw-ham-1:9100"]
    assert ham == [pytest.approx(4.3)]
    states = dict((lb["state"], v) for lb, v in r.evaluate(
        'count by (state) (swcmp_session_state == 1)', series, now))
    assert states == {"idle": 3, "due": 1, "failed": 1, "standby": 1, "disabled": 1}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package prometheus)")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"swcmp_dashboard:q{i}", "expr": q.replace("$instance", ".*")}
        for i, q in enumerate(queries(dashboard())) if not q.startswith("label_values")]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
