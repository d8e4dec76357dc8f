#!/usr/bin/env python3
"""Draw contrib/grafana/swcmp-dashboard.json as a picture, from a sample of swcmp's metrics.

Grafana is not available where swcmp is built, so this is a stand-in: it lays out the
dashboard's panels at their grid positions with their titles, evaluates each panel's
queries on a metrics sample (Prometheus text format, as node_exporter serves swcmp's
textfile, with ``instance`` labels) with a small evaluator of the PromQL the dashboard
uses (selectors, ``- time()``, ``/``, comparisons, ``or``, ``vector()``, ``count``/
``sum``/``min``/``max by``), and draws stat, bar gauge and table panels in Grafana's dark
colours with the panels' thresholds, units and legends. ``$instance`` is "All".

    python scripts/render_dashboard.py [--sample FILE] [--out docs/img/dashboard.png]

The sample's ``# now: UNIX-SECONDS`` line is the evaluation time (``time()``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "contrib" / "grafana" / "swcmp-dashboard.json"
SAMPLE = REPO / "contrib" / "grafana" / "sample.prom"
OUT = REPO / "docs" / "img" / "dashboard.png"

Labels = dict[str, str]
Vector = list[tuple[Labels, float]]
Value = Vector | float

_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|
    (?P<op>==|!=|>=|<=|=~|!~|[-+*/(){},=<>])|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*))""", re.X)
_AGG: dict[str, Callable[[list[float]], float]] = {
    "count": lambda v: float(len(v)), "sum": sum, "min": min, "max": max}
_CMP: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else math.nan}


def tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        out.append(m.group(m.lastgroup or "op"))
        pos = m.end()
    return out


class Query:
    """One PromQL expression of the subset above, evaluated over ``series``."""

    def __init__(self, expr: str, series: Vector, now: float) -> None:
        self.toks = tokens(expr)
        self.i = 0
        self.series = series
        self.now = now
        self.expr = expr

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'more'} at token {self.i} of {self.expr!r}")
        self.i += 1
        return tok

    def run(self) -> Value:
        value = self.union()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r} in {self.expr!r}")
        return value

    def union(self) -> Value:
        left = self.compare()
        while self.peek() == "or":
            self.take()
            right = self.compare()
            assert isinstance(left, list) and isinstance(right, list), "or needs vectors"
            seen = {_key(lb) for lb, _ in left}
            left = left + [(lb, v) for lb, v in right if _key(lb) not in seen]
        return left

    def compare(self) -> Value:
        left = self.additive()
        op = self.peek()
        if op in _CMP:
            self.take()
            right = self.additive()
            assert isinstance(left, list) and isinstance(right, float), "vector OP scalar"
            return [(lb, v) for lb, v in left if _CMP[op](v, right)]
        return left

    def additive(self) -> Value:
        left = self.mult()
        while self.peek() in ("+", "-"):
            left = _arith(self.take(), left, self.mult())
        return left

    def mult(self) -> Value:
        left = self.atom()
        while self.peek() in ("*", "/"):
            left = _arith(self.take(), left, self.atom())
        return left

    def atom(self) -> Value:
        tok = self.take()
        if tok == "(":
            inner = self.union()
            self.take(")")
            return inner
        if re.fullmatch(r"\d+(\.\d+)?", tok):
            return float(tok)
        if tok == "time":
            self.take("(")
            self.take(")")
            return self.now
        if tok == "vector":
            self.take("(")
            n = float(self.take())
            self.take(")")
            return [({}, n)]
        if tok in _AGG:
            by: list[str] | None = None
            if self.peek() == "by":
                self.take()
                by = self.labels()
            self.take("(")
            inner = self.union()
            self.take(")")
            assert isinstance(inner, list)
            groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
            for lb, v in inner:
                key = tuple((k, lb.get(k, "")) for k in (by or []))
                groups.setdefault(key, []).append(v)
            return [(dict(k), _AGG[tok](vs)) for k, vs in groups.items()]
        return self.selector(tok)

    def labels(self) -> list[str]:
        self.take("(")
        names = []
        while self.peek() != ")":
            names.append(self.take())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return names

    def selector(self, name: str) -> Vector:
        if not name.startswith("swcmp_"):
            raise ValueError(f"unknown function or metric {name!r} in {self.expr!r}")
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == "{":
            self.take()
            while self.peek() != "}":
                label, op, text = self.take(), self.take(), self.take()
                matchers.append((label, op, json.loads(text)))
                if self.peek() == ",":
                    self.take()
            self.take("}")
        return [(dict(lb), v) for lb, v in self.series
                if lb["__name__"] == name and all(_match(lb, m) for m in matchers)]


def _key(labels: Labels) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def _match(labels: Labels, m: tuple[str, str, str]) -> bool:
    label, op, text = m
    have = labels.get(label, "")
    if op in ("=~", "!~"):
        hit = re.fullmatch(text.replace("$instance", ".*"), have) is not None
        return hit if op == "=~" else not hit
    return (have == text) if op == "=" else (have != text)


def _arith(op: str, left: Value, right: Value) -> Value:
    if isinstance(left, float) and isinstance(right, float):
        return _ARITH[op](left, right)
    if isinstance(left, list) and isinstance(right, float):
        return [({k: v for k, v in lb.items() if k != "__name__"}, _ARITH[op](x, right))
                for lb, x in left]
    if isinstance(left, float) and isinstance(right, list):
        return [({k: v for k, v in lb.items() if k != "__name__"}, _ARITH[op](left, x))
                for lb, x in right]
    raise ValueError("only vector OP scalar, scalar OP vector and scalar OP scalar")


def load_sample(path: Path) -> tuple[Vector, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = path.read_text()
    now_line = re.search(r"^# now: (\d+)", text, re.M)
    if not now_line:
        raise SystemExit(f"{path}: no '# now: UNIX-SECONDS' line")
    series: Vector = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.append(({"__name__": s.name, **s.labels}, float(s.value)))
    return series, float(now_line.group(1))


def evaluate(expr: str, series: Vector, now: float) -> Vector:
    value = Query(expr, series, now).run()
    return value if isinstance(value, list) else [({}, value)]


# ------------------------------------------------------------------------------ drawing

BG, PANEL, TEXT, DIM = "#111217", "#181b1f", "#ccccdc", "#8e8e8e"
COLORS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "blue": "#5794f2",
          "yellow": "#fade2a"}


def _legend(fmt: str, labels: Labels) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def _color(value: float, steps: list[dict[str, Any]]) -> str:
    color = steps[0]["color"]
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def _fmt(value: float, unit: str) -> str:
    if unit == "d":
        return f"{value:.1f} d"
    return f"{value:g}"


def draw(dashboard: dict[str, Any], series: Vector, now: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    col_px, row_px, top_px = 66.0, 32.0, 56.0
    width, height = 24 * col_px, rows * row_px + top_px
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100, facecolor=BG)
    fig.text(12 / width, 1 - 30 / height, dashboard["title"], color=TEXT, fontsize=15,
             va="center")
    fig.text(1 - 12 / width, 1 - 30 / height, "Gateway: All   (picture drawn by "
             "scripts/render_dashboard.py from a metrics sample, not by Grafana)",
             color=DIM, fontsize=8, va="center", ha="right")
    for p in dashboard["panels"]:
        g = p["gridPos"]
        x0 = (g["x"] * col_px + 4) / width
        y0 = 1 - (top_px + (g["y"] + g["h"]) * row_px - 4) / height
        w = (g["w"] * col_px - 8) / width
        h = (g["h"] * row_px - 8) / height
        ax = fig.add_axes((x0, y0, w, h))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        ax.add_patch(FancyBboxPatch((0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.01",
                                    facecolor=PANEL, edgecolor="#2c3235",
                                    transform=ax.transAxes))
        title_h = 26 / (g["h"] * row_px)
        ax.text(0.015, 1 - title_h / 2, p["title"], color=TEXT, fontsize=10, va="center",
                weight="bold")
        body = (0.02, 0.03, 0.96, 1 - title_h - 0.05)  # x, y, w, h inside the panel
        results = [(t, evaluate(t["expr"], series, now)) for t in p["targets"]]
        cfg = p["fieldConfig"]["defaults"]
        steps = cfg["thresholds"]["steps"]
        unit = cfg.get("unit", "none")
        if p["type"] == "stat":
            items = [(_legend(t["legendFormat"], lb), v) for t, vec in results for lb, v in vec]
            _draw_stat(ax, body, items, steps, unit, p["options"].get("textMode", ""))
        elif p["type"] == "bargauge":
            items = [(_legend(t["legendFormat"], lb), v) for t, vec in results for lb, v in vec]
            _draw_bars(ax, body, sorted(items), steps, unit, cfg.get("min", 0))
        else:
            _draw_table(ax, body, results, steps, unit)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BG)
    plt.close(fig)


def _draw_stat(ax: Any, body: tuple[float, ...], items: list[tuple[str, float]],
               steps: list[dict[str, Any]], unit: str, text_mode: str) -> None:
    from matplotlib.patches import Rectangle

    x, y, w, h = body
    n = max(len(items), 1)
    cell = w / n
    for i, (name, value) in enumerate(items):
        cx = x + i * cell
        ax.add_patch(Rectangle((cx + 0.005, y), cell - 0.01, h, facecolor=_color(value, steps)))
        if text_mode == "name":
            ax.text(cx + cell / 2, y + h / 2, name, ha="center", va="center", color="white",
                    fontsize=9, weight="bold", wrap=True)
        else:
            ax.text(cx + cell / 2, y + h * 0.6, _fmt(value, unit), ha="center", va="center",
                    color="white", fontsize=18, weight="bold")
            ax.text(cx + cell / 2, y + h * 0.2, name, ha="center", va="center", color="white",
                    fontsize=8)


def _draw_bars(ax: Any, body: tuple[float, ...], items: list[tuple[str, float]],
               steps: list[dict[str, Any]], unit: str, vmin: float) -> None:
    from matplotlib.patches import Rectangle

    x, y, w, h = body
    if not items:
        ax.text(x + w / 2, y + h / 2, "No data", ha="center", color=DIM)
        return
    top = max(max(v for _, v in items), 1.0)
    low = min(vmin, min(v for _, v in items))
    row = h / len(items)
    label_w, value_w = 0.34, 0.1
    for i, (name, value) in enumerate(items):
        ry = y + h - (i + 1) * row
        ax.text(x, ry + row / 2, name, color=TEXT, fontsize=7.5, va="center")
        bx, bw = x + label_w, w - label_w - value_w
        ax.add_patch(Rectangle((bx, ry + row * 0.15), bw, row * 0.7, facecolor="#22252b"))
        share = (value - low) / (top - low) if top > low else 0
        ax.add_patch(Rectangle((bx, ry + row * 0.15), bw * max(share, 0.004), row * 0.7,
                               facecolor=_color(value, steps)))
        ax.text(x + w, ry + row / 2, _fmt(value, unit), color=_color(value, steps),
                fontsize=8, va="center", ha="right", weight="bold")


def _draw_table(ax: Any, body: tuple[float, ...], results: list[tuple[dict[str, Any], Vector]],
                steps: list[dict[str, Any]], unit: str) -> None:
    x, y, w, h = body
    rows: list[tuple[str, Labels, float]] = []
    for target, vec in results:
        for lb, v in vec:
            rows.append((target["legendFormat"], lb, v))
    columns: list[str] = []
    for _, lb, _ in rows:
        columns += [k for k in lb if k not in columns and k not in ("__name__", "job")]
    has_kind = any(kind for kind, _, _ in rows)
    header = (["what"] if has_kind else []) + columns + ["value"]
    line = min(h / (len(rows) + 1.5), 0.14)
    col_w = w / len(header)
    for j, name in enumerate(header):
        ax.text(x + j * col_w, y + h - line / 2, name, color=DIM, fontsize=8, va="center",
                weight="bold")
    if not rows:
        ax.text(x + w / 2, y + h / 2, "No data: nothing drifts", ha="center", color=DIM)
    for i, (kind, lb, v) in enumerate(rows):
        cells = ([kind] if has_kind else []) + [lb.get(c, "") for c in columns]
        ry = y + h - (i + 1.5) * line
        for j, cell in enumerate(cells):
            ax.text(x + j * col_w, ry, cell or "-", color=TEXT, fontsize=7.5, va="center")
        ax.text(x + (len(header) - 1) * col_w, ry, _fmt(v, unit), color=_color(v, steps),
                fontsize=8, va="center", weight="bold")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD)
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    series, now = load_sample(args.sample)
    draw(json.loads(args.dashboard.read_text()), series, now, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
