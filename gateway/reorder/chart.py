"""The report at a glance: an SVG of the two groups' repurchase rates with their 95 %
intervals and the uplift. Written by hand: two bars, two whiskers and a few labels are some
forty lines of markup, where a plotting library (matplotlib: tens of megabytes, a font cache,
a process-wide state) would be a heavy dependency for one chart; every text is escaped."""

from __future__ import annotations

from html import escape

from gateway.reorder.report import Group, Report

W, H = 480, 320
TOP, BOTTOM, LEFT = 40, 260, 60


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _y(rate: float) -> float:
    return BOTTOM - rate * (BOTTOM - TOP)


def _bar(x: int, g: Group, label: str, colour: str) -> str:
    y = _y(g.rate)
    lo, hi = _y(g.rate_low), _y(g.rate_high)
    cx = x + 50
    return (
        f'<rect x="{x}" y="{y:.1f}" width="100" height="{BOTTOM - y:.1f}" fill="{colour}"/>'
        f'<line x1="{cx}" y1="{lo:.1f}" x2="{cx}" y2="{hi:.1f}" stroke="#222" stroke-width="2"/>'
        f'<line x1="{cx - 10}" y1="{lo:.1f}" x2="{cx + 10}" y2="{lo:.1f}" stroke="#222"/>'
        f'<line x1="{cx - 10}" y1="{hi:.1f}" x2="{cx + 10}" y2="{hi:.1f}" stroke="#222"/>'
        f'<text x="{cx}" y="{BOTTOM + 18}" text-anchor="middle">{escape(label)}</text>'
        f'<text x="{cx}" y="{BOTTOM + 34}" text-anchor="middle" font-size="11">'
        f"{g.repurchased}/{g.reminders} = {_pct(g.rate)}</text>"
    )


def svg(r: Report) -> str:
    u = r.uplift
    ticks = "".join(
        f'<line x1="{LEFT}" y1="{_y(t / 4):.1f}" x2="{W - 20}" y2="{_y(t / 4):.1f}" '
        f'stroke="#ddd"/><text x="{LEFT - 6}" y="{_y(t / 4) + 4:.1f}" text-anchor="end" '
        f'font-size="11">{25 * t}%</text>'
        for t in range(5)
    )
    title = f"Loop {r.loop}: repurchase within {r.window_days} days"
    uplift = (
        f"Uplift {_pct(u.absolute)} (95% CI {_pct(u.absolute_low)} to {_pct(u.absolute_high)}), "
        f"relative {_pct(u.relative)}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="13">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{W}" height="{H}" fill="#fff"/>{ticks}'
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
        + _bar(LEFT + 60, r.treated, "treated", "#2f7ed8")
        + _bar(LEFT + 240, r.control, "control", "#999")
        + f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{escape(uplift)}</text></svg>'
    )


__all__ = ["svg"]
