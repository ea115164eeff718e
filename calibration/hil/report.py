"""Trend figures and the one-page summary of a HIL history (``qkd-hw hil report``)."""

from __future__ import annotations

from typing import Any

__all__ = ["quantity_keys", "series", "summary_text", "trend_figure"]


def quantity_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Every ``group.quantity`` measured in any run, sorted."""
    return sorted({k for run in runs for k in run["quantities"]})


def series(runs: list[dict[str, Any]], key: str) -> list[tuple[str, float, list[str]]]:
    """``(utc, value, problems)`` of ``key`` in every run that measured it, oldest first."""
    out = []
    for run in runs:
        q = run["quantities"].get(key)
        if isinstance(q, dict) and isinstance(q.get("value"), int | float):
            out.append((run["utc"], float(q["value"]), list(q.get("problems") or [])))
    return out


def _latest(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    for run in reversed(runs):
        if key in run["quantities"]:
            return run["quantities"][key]
    return {}


def trend_figure(runs: list[dict[str, Any]], key: str) -> Any:
    """The trend of ``key`` over the runs: values (failed runs red, drift alarms orange),
    the absolute range (red dashed) and the baseline +- tolerance (green band) of the latest
    run's threshold."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    pts = series(runs, key)
    latest = _latest(runs, key)
    th = latest.get("threshold") or {}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = list(range(len(pts)))
    ax.plot(x, [v for _, v, _ in pts], "-", color="0.6", zorder=1)
    for i, (_, v, probs) in enumerate(pts):
        drift = any(p.startswith("drift") for p in probs)
        other = any(not p.startswith("drift") for p in probs)
        color = "red" if other else "orange" if drift else "tab:blue"
        ax.plot(i, v, "o", color=color, zorder=2)
    for side in ("min", "max"):
        if th.get(side) is not None:
            ax.axhline(th[side], color="red", ls="--", lw=1, label=f"{side} {th[side]:g}")
    if th.get("baseline") is not None:
        ax.axhline(th["baseline"], color="green", lw=1, label=f"baseline {th['baseline']:g}")
        if th.get("tolerance") is not None:
            ax.axhspan(th["baseline"] - th["tolerance"], th["baseline"] + th["tolerance"],
                       color="green", alpha=0.12, label=f"+- tolerance {th['tolerance']:g}")
    ax.set_xticks(x, [u[:10] for u, _, _ in pts], rotation=45, ha="right", fontsize=7)
    unit = latest.get("unit") or ""
    ax.set_ylabel(f"{key.split('.', 1)[1]} [{unit}]" if unit else key.split(".", 1)[1])
    ax.set_title(f"{key}: red = out of range, orange = drift alarm", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return fig


def summary_text(runs: list[dict[str, Any]], source: str) -> str:
    """One page (Markdown): the latest run's tests and every quantity's status and trend."""
    last = runs[-1]
    tests = last.get("tests", {})
    counts: dict[str, int] = {}
    for outcome in tests.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    lines = [f"# HIL report: {last.get('lab') or 'lab'}", "",
             f"History `{source}`: {len(runs)} runs, {runs[0]['utc']} .. {last['utc']}.", "",
             f"Latest run {last['utc']} ({'read-only' if last.get('read_only') else 'full'}, "
             f"config `{last.get('config')}`): "
             + (", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no tests"), ""]
    failed = sorted(t for t, o in tests.items() if o not in ("passed", "skipped"))
    if failed:
        lines += ["Failed tests:", "", *[f"* `{t}`" for t in failed], ""]
    unsafe = {n: s for n, s in last.get("safe_state", {}).items() if s != "ok"}
    if unsafe:
        lines += ["Not in the safe state:", "", *[f"* {n}: {s}" for n, s in unsafe.items()], ""]
    lines += ["| quantity | latest | unit | previous | status | plot |",
              "|---|---|---|---|---|---|"]
    for key in quantity_keys(runs):
        pts = series(runs, key)
        if not pts:
            continue
        _, v, probs = pts[-1]
        prev = f"{pts[-2][1]:.6g}" if len(pts) > 1 else ""
        status = ("DRIFT" if any(p.startswith("drift") for p in probs) else "FAIL") \
            if probs else "ok"
        detail = f" ({'; '.join(probs)})" if probs else ""
        unit = _latest(runs, key).get("unit") or ""
        lines.append(f"| {key} | {v:.6g} | {unit} | {prev} | {status}{detail} | "
                     f"[png]({key}.png) |")
    return "\n".join(lines) + "\n"
