"""Tune a defense to a leakage budget: the most accurate setting whose leakage stays under it.

The search (``nopeek tune``), assuming leakage falls and accuracy falls as a defense gets
stronger:

1. Evaluate the undefended setting; if it meets the budget, it is the answer.
2. For each knob (NoPeek's alpha, cut-noise sigma, the adversarial defense's weight, a label
   defense's strength), evaluate its strongest value ``hi``. A knob whose ``hi`` misses the
   budget drops out. For the others, bisect between the weakest failing and the weakest
   passing strength for ``iterations`` rounds (every knob in lockstep, so a round's runs can go
   in parallel): the weakest passing strength is the knob's best.
3. Combine the knobs: every knob at ``t`` times its weakest passing strength (``hi`` for a
   knob that dropped out), bisecting ``t`` in (0, 1] the same way; weaker parts together may
   pass with better accuracy than one strong part alone.
4. Answer: among every evaluated setting that meets the budget, the most accurate (mean over
   seeds); none if no evaluated setting does.

"Meets the budget" is judged on the mean over seeds of the strongest attack's leakage
(:func:`nopeek.eval.summary.meets`); for label attacks that is the leak ``max(AUC, 1 - AUC)`` at
the worst epoch of training (``leak_max``), not the final epoch's AUC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from nopeek.errors import ConfigError
from nopeek.eval.settings import Setting
from nopeek.eval.summary import SettingSummary
from nopeek.eval.sweep import SweepSpec
from nopeek.io import atomic_write_json

Evaluate = Callable[[list[Setting]], dict[Setting, SettingSummary]]


@dataclass(frozen=True)
class Knob:
    """A defense family with one strength ``t`` in (0, ``hi``].

    ``template`` is ``"alpha"`` (NoPeek's weight) or a defense spec with ``{}`` where the
    strength goes, e.g. ``"cut-noise:gaussian,sigma={},clip=1,inference=true"``.

    >>> Knob("noise", "noise:r={}", 4.0).parts(0.5)
    (0.0, ('noise:r=0.5',))
    """

    name: str
    template: str
    hi: float

    def parts(self, t: float) -> tuple[float, tuple[str, ...]]:
        """(alpha, defense specs) of this knob at strength ``t``."""
        if self.template == "alpha":
            return float(t), ()
        return 0.0, (self.template.format(f"{t:.4g}"),)


def combine(parts: Sequence[tuple[Knob, float]]) -> Setting:
    """One setting applying every (knob, strength) together (strength 0 = knob off).

    >>> combine([(Knob("alpha", "alpha", 4), 1.0), (Knob("n", "n:s={}", 1), 0.25)]).label
    'alpha=1 + n:s=0.25'
    """
    alpha, specs = 0.0, []
    for knob, t in parts:
        if t <= 0:
            continue
        a, d = knob.parts(t)
        alpha += a
        specs += d
    return Setting(float(f"{alpha:.4g}"), tuple(specs))


@dataclass
class TuneResult:
    """The answer (``best`` None when nothing meets the budget) and every evaluated setting."""

    best: SettingSummary | None
    evaluated: dict[Setting, SettingSummary]
    passing: dict[Setting, bool]
    knob_best: dict[str, float | None] = field(default_factory=dict)

    def candidates(self) -> list[tuple[Setting, SettingSummary, bool]]:
        return [(s, v, self.passing[s]) for s, v in self.evaluated.items()]


def search(
    knobs: Sequence[Knob],
    evaluate: Evaluate,
    ok: Callable[[SettingSummary], bool],
    *,
    iterations: int = 4,
) -> TuneResult:
    """Run the search described in the module docstring.

    ``evaluate`` maps new settings to their summaries (it may run them in parallel); ``ok``
    says whether a summary meets the budget.
    """
    if iterations < 0:
        raise ConfigError(f"--iterations must be >= 0, got {iterations}")
    seen: dict[Setting, SettingSummary] = {}
    passing: dict[Setting, bool] = {}

    def run(settings: list[Setting]) -> None:
        new = list(dict.fromkeys(s for s in settings if s not in seen))
        if new:
            for s, summary in evaluate(new).items():
                seen[s], passing[s] = summary, ok(summary)

    run([Setting()])
    if passing[Setting()]:
        return TuneResult(seen[Setting()], seen, passing)
    best_t = _bisect(
        {k.name: (lambda t, k=k: combine([(k, t)])) for k in knobs},
        {k.name: k.hi for k in knobs},
        run,
        passing,
        iterations,
    )
    if len(knobs) > 1:
        scale = {k.name: best_t[k.name] or k.hi for k in knobs}
        joint = lambda t: combine([(k, t * scale[k.name]) for k in knobs])  # noqa: E731
        _bisect({"combined": joint}, {"combined": 1.0}, run, passing, iterations)
    ok_settings = [s for s in seen if passing[s]]
    best = max(ok_settings, key=lambda s: seen[s].accuracy.mean, default=None)
    return TuneResult(seen[best] if best else None, seen, passing, best_t)


def _bisect(
    make: dict[str, Callable[[float], Setting]],
    hi: dict[str, float],
    run: Callable[[list[Setting]], None],
    passing: dict[Setting, bool],
    iterations: int,
) -> dict[str, float | None]:
    """Lockstep bisection of every family in ``make`` on (0, hi]; weakest passing strength."""
    run([make[n](hi[n]) for n in make])
    bounds = {n: [0.0, hi[n]] for n in make if passing[make[n](hi[n])]}
    for _ in range(iterations):
        mids = {n: (lo + up) / 2 for n, (lo, up) in bounds.items()}
        run([make[n](t) for n, t in mids.items()])
        for n, t in mids.items():
            bounds[n][1 if passing[make[n](t)] else 0] = t
    return {n: (bounds[n][1] if n in bounds else None) for n in make}


# Defense families the search can turn up; ``hi`` is the strongest value tried.
KNOBS: dict[str, Knob] = {
    "alpha": Knob("alpha", "alpha", 8.0),
    "cut-noise": Knob("cut-noise", "cut-noise:gaussian,sigma={},clip=1,inference=true", 0.5),
    "isotropic": Knob("isotropic", "isotropic:r={}", 4.0),
    "marvell": Knob("marvell", "marvell:s={}", 4.0),
    "adversarial": Knob("adversarial", "adversarial:weight={}", 4.0),
}


def parse_knobs(text: str) -> list[Knob]:
    """``"alpha,cut-noise=0.5"`` -> knobs (``=x`` sets the strongest value ``hi``).

    >>> [(k.name, k.hi) for k in parse_knobs("alpha=4,cut-noise")]
    [('alpha', 4.0), ('cut-noise', 0.5)]
    """
    knobs = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, eq, hi = item.partition("=")
        if name not in KNOBS:
            raise ConfigError(f"unknown --search knob {name!r}; choose from: {', '.join(KNOBS)}")
        knob = KNOBS[name]
        if eq:
            try:
                value = float(hi)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ConfigError(f"--search {name}={hi!r}: the strongest value must be > 0")
            knob = Knob(knob.name, knob.template, value)
        knobs.append(knob)
    if not knobs or len({k.name for k in knobs}) != len(knobs):
        raise ConfigError("--search needs distinct knobs, e.g. --search alpha,cut-noise")
    return knobs


@dataclass
class Budget:
    """Leakage limits (None = no limit): SSIM strictly below; the label leak, max(AUC, 1 - AUC)
    at the worst epoch (``leak_max``, :func:`nopeek.eval.summary.label_leak`), at most."""

    max_ssim: float | None = None
    max_label_auc: float | None = None

    def __post_init__(self) -> None:
        if self.max_ssim is None and self.max_label_auc is None:
            raise ConfigError("give a budget: --max-ssim (e.g. 0.3) and/or --max-label-auc (0.6)")
        if self.max_ssim is not None and not 0 < self.max_ssim <= 1:
            raise ConfigError(f"--max-ssim must be in (0, 1], got {self.max_ssim}")
        if self.max_label_auc is not None and not 0.5 <= self.max_label_auc <= 1:
            raise ConfigError(f"--max-label-auc must be in [0.5, 1], got {self.max_label_auc}")

    def ok(self, summary: SettingSummary) -> bool:
        from nopeek.eval.summary import meets

        return meets(summary, max_ssim=self.max_ssim, max_label_auc=self.max_label_auc)


def tune(
    spec: SweepSpec,
    out: str | Path,
    *,
    knobs: Sequence[Knob],
    budget: Budget,
    iterations: int = 3,
    jobs: int = 1,
    quiet: bool = False,
) -> TuneResult:
    """Search ``knobs`` for the most accurate setting within ``budget`` (module docstring).

    Every evaluated setting is a run of the sweep in ``out`` (``spec``'s settings are ignored),
    so ``nopeek report --sweep OUT`` shows the search; ``OUT/tune.json`` holds the answer.
    """
    from nopeek.eval.summary import summarize
    from nopeek.eval.sweep import run_sweep

    done: list[Setting] = []

    def evaluate(new: list[Setting]) -> dict[Setting, SettingSummary]:
        done.extend(new)
        sweep = replace(spec, settings=list(done))
        by_slug = {s.setting: s for s in summarize(run_sweep(sweep, out, jobs=jobs, quiet=quiet))}
        return {s: by_slug[s.slug] for s in new}

    result = search(knobs, evaluate, budget.ok, iterations=iterations)
    atomic_write_json(Path(out) / "tune.json", tune_json(result, budget, spec))
    return result


def tune_json(result: TuneResult, budget: Budget, spec: SweepSpec) -> dict:
    """The answer and every candidate, flat (what ``OUT/tune.json`` holds)."""

    def mean(stat):
        return None if stat is None else stat.mean

    cands = [
        {
            "setting": s.slug,
            "label": s.label,
            "alpha": s.alpha,
            "defenses": list(s.defenses),
            "accuracy": v.accuracy.mean,
            "best_ssim": mean(v.best_ssim),
            "label_auc": mean(v.label_auc),
            "meets_budget": ok,
        }  # fmt: skip
        for s, v, ok in result.candidates()
    ]
    return {
        "max_ssim": budget.max_ssim,
        "max_label_auc": budget.max_label_auc,
        "attacks": list(spec.attacks),
        "seeds": list(spec.seeds),
        "best": None if result.best is None else result.best.setting,
        "best_label": None if result.best is None else result.best.label,
        "knob_best": result.knob_best,
        "candidates": cands,
    }
