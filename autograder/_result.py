"""The result of one check: the same object for the CLI, the notebook and nbgrader, in text, HTML or JSON."""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field, replace

# A part's status. Only "passed" earns points; the others say why a part earned none.
PASSED, FAILED = "passed", "failed"
SKIPPED = "skipped"                  # left out by --framework
NEEDS_REFERENCE = "needs-reference"  # solutions/ is absent, and this part compares against the reference
NEEDS_GPU = "needs-gpu"
_MARKS = {PASSED: "✓", FAILED: "✗", SKIPPED: "–", NEEDS_REFERENCE: "?", NEEDS_GPU: "?"}
_COLOURS = {PASSED: "#1a7f37", FAILED: "#cf222e"}


@dataclass
class PartResult:
    id: str
    title: str
    status: str
    points: float
    max_points: float
    message: str
    hint: str
    framework: str
    kind: str
    details: dict = field(default_factory=dict)   # error statistics, timings and ratios: numbers to show

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class CheckResult:
    exercise: str
    title: str
    parts: list[PartResult]
    device: str
    notebook: str = ""
    seed: int | None = None
    frameworks: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)   # seconds: "total", "startup", and one per part
    isolation: str = ""                           # how the student's process was confined (e.g. "landlock v7")
    error: str | None = None                      # the whole check could not run (bad notebook, timeout …)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.parts) and all(p.passed for p in self.parts)

    @property
    def score(self) -> float:
        return sum(p.points for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_points for p in self.parts)

    def only(self, part_ids) -> "CheckResult":
        """The same result, narrowed to some parts (a test cell shows and asserts its own part)."""
        return replace(self, parts=[p for p in self.parts if p.id in part_ids])

    def first_failure(self) -> PartResult | None:
        return next((p for p in self.parts if not p.passed and p.status != SKIPPED), None)

    # -- renderings ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(passed=self.passed, score=self.score, max_score=self.max_score)
        for part, raw in zip(self.parts, d["parts"]):
            raw["passed"] = part.passed
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        head = f"{self.exercise} — {self.title}: {self.score:g}/{self.max_score:g} points on {self.device}"
        lines = [head]
        if self.error:
            lines.append(f"  could not check: {self.error}")
        for p in self.parts:
            lines.append(f"  {_MARKS.get(p.status, '?')} {p.id:<18} {p.points:g}/{p.max_points:g}  {p.message}")
        nxt = self.first_failure()
        if nxt is not None and nxt.status == FAILED:
            lines.append(f"  hint ({nxt.id}): {nxt.hint}")
        return "\n".join(lines)

    __str__ = summary

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = []
        for p in self.parts:
            colour = _COLOURS.get(p.status, "#9a6700")
            extra = ""
            if "ratio" in p.details:
                extra = (f"<br><small>ratio {p.details['ratio']:.2f}× (threshold {p.details.get('threshold', 0):g}×"
                         f" on {esc(self.device)})</small>")
            elif "max_abs_err" in p.details:
                extra = (f"<br><small>max abs err {p.details['max_abs_err']:.3g} "
                         f"(rtol {p.details['rtol']:g}, atol {p.details['atol']:g})</small>")
            rows.append(
                f"<tr><td style='color:{colour};font-weight:bold'>{_MARKS.get(p.status, '?')} {esc(p.status)}</td>"
                f"<td><code>{esc(p.id)}</code><br><small>{esc(p.title)}</small></td>"
                f"<td>{p.points:g}/{p.max_points:g}</td><td>{esc(p.message)}{extra}"
                + (f"<details><summary>Hint</summary>{esc(p.hint)}</details>" if not p.passed else "")
                + "</td></tr>")
        error = f"<p style='color:#cf222e'>Could not check: {esc(self.error)}</p>" if self.error else ""
        return (f"<div class='clash-result'><b>{esc(self.exercise)} — {esc(self.title)}</b>: "
                f"{self.score:g}/{self.max_score:g} points, on <b>{esc(self.device)}</b>{error}"
                "<table><tr><th>status</th><th>part</th><th>points</th><th>message</th></tr>"
                + "".join(rows) + "</table></div>")

    def __repr__(self) -> str:
        return self.summary()
