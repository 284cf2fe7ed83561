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
   seeds); none if no evaluated setting does, and then the closest one and what it misses.
5. Certify it (:mod:`nopeek.eval.certify`): re-attack every seed's run of the answer with the
   full family search of every attack; the worst case over runs, attacks and their families
   must stay within the budget (its margin is reported). One that fails is not the answer: the
   next most accurate passing setting is re-attacked, and so on (none if every one fails).

"Meets the budget" is judged on the means over seeds (:func:`nopeek.eval.summary.meets`): the
strongest attack's ``leak`` (0 = a blind guess, 1 = exact, in the data's own terms, any data
set: ``--max-leak``), its SSIM (images only: ``--max-ssim``) or the label attacks' folded AUC
at the worst epoch (``--max-label-auc``), and the accuracy lost against the undefended setting
(``--max-accuracy-drop``, 5 points by default). The bisection follows the leakage limits alone
(they fall as a defense gets stronger); the accuracy limit then rules out the settings that
cost too much.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from nopeek.errors import ConfigError
from nopeek.eval import score as S
from nopeek.eval.certify import Certificate, Searcher, certify_best, default_searcher
from nopeek.eval.settings import Setting
from nopeek.eval.summary import SettingSummary, accuracy_drop, budget_misses
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
    """The answer (``best`` None when nothing meets the budget) and every evaluated setting.

    ``misses`` (filled by :meth:`Budget.judge`): what each setting misses of the budget, and
    by how much (:func:`~nopeek.eval.summary.budget_misses`); ``reference_accuracy``: the
    undefended setting's mean accuracy."""

    best: SettingSummary | None
    evaluated: dict[Setting, SettingSummary]
    passing: dict[Setting, bool]
    knob_best: dict[str, float | None] = field(default_factory=dict)
    misses: dict[Setting, dict[str, float]] = field(default_factory=dict)
    reference_accuracy: float | None = None
    certificates: dict[Setting, Certificate] = field(default_factory=dict)

    @property
    def certificate(self) -> Certificate | None:
        """The answer's re-attack at full strength (:mod:`nopeek.eval.certify`)."""
        best = None if self.best is None else self.best.setting
        return next((c for s, c in self.certificates.items() if s.slug == best), None)

    def candidates(self) -> list[tuple[Setting, SettingSummary, bool]]:
        return [(s, v, self.passing[s]) for s, v in self.evaluated.items()]

    def closest(self) -> Setting | None:
        """The setting that misses the budget by the least (:meth:`Budget.shortfall`), when
        none meets it; None when one does (or none was judged)."""
        if self.best is not None or not self.misses:
            return None
        return min(self.misses, key=lambda s: Budget.shortfall(self.misses[s]))


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


@dataclass(kw_only=True)
class Budget:
    """What tune may return (None = no limit), judged on means over seeds: the strongest
    attack's ``leak`` at most ``max_leak`` (any data set); SSIM strictly below ``max_ssim``
    (images only); the label attacks' worst-epoch folded AUC (``auc_folded_max``,
    :func:`nopeek.eval.summary.label_leak`) at most ``max_label_auc``; and test accuracy at most
    ``max_accuracy_drop`` percentage points below the undefended setting's."""

    max_leak: float | None = None
    max_ssim: float | None = None
    max_label_auc: float | None = None
    max_accuracy_drop: float | None = S.ACCURACY_DROP_POINTS

    def __post_init__(self) -> None:
        if self.max_leak is None and self.max_ssim is None and self.max_label_auc is None:
            raise ConfigError(
                "give a budget: --max-leak (e.g. 0.2, any data), --max-ssim (0.3, images) "
                "and/or --max-label-auc (0.6)"
            )
        if self.max_leak is not None and not 0 <= self.max_leak < 1:
            raise ConfigError(f"--max-leak must be in [0, 1), got {self.max_leak}")
        if self.max_ssim is not None and not 0 < self.max_ssim <= 1:
            raise ConfigError(f"--max-ssim must be in (0, 1], got {self.max_ssim}")
        if self.max_label_auc is not None and not 0.5 <= self.max_label_auc <= 1:
            raise ConfigError(f"--max-label-auc must be in [0.5, 1], got {self.max_label_auc}")
        drop = self.max_accuracy_drop
        if drop is not None and not 0 <= drop <= 100:
            raise ConfigError(f"--max-accuracy-drop is in percentage points 0..100, got {drop}")

    def check_data(self, kind: str, dataset: str) -> None:
        """Refuse an image-only limit on data of another ``kind`` (one line naming the fix)."""
        if self.max_ssim is not None and kind != "image":
            raise ConfigError(
                f"--max-ssim measures images, but {dataset} holds {kind} rows; budget its leak "
                "with --max-leak (e.g. --max-leak 0.2) instead"
            )

    def _limits(self) -> dict[str, float | None]:
        return {"max_leak": self.max_leak, "max_ssim": self.max_ssim}

    def misses(
        self, summary: SettingSummary, reference_accuracy: float | None = None
    ) -> dict[str, float]:
        """What ``summary`` misses of this budget, by how much (empty: it meets it); the
        accuracy drop only counts given the undefended ``reference_accuracy``."""
        return budget_misses(
            summary,
            **self._limits(),
            max_label_auc=self.max_label_auc,
            max_accuracy_drop=self.max_accuracy_drop,
            reference_accuracy=reference_accuracy,
        )

    def ok(self, summary: SettingSummary, reference_accuracy: float | None = None) -> bool:
        return not self.misses(summary, reference_accuracy)

    @staticmethod
    def shortfall(misses: dict[str, float]) -> float:
        """One number for how far a setting misses: the leakage excesses (in their own units,
        0..1) plus the accuracy excess in points / 100.

        >>> round(Budget.shortfall({"leak": 0.1, "accuracy_drop": 2.0}), 6)
        0.12
        """
        return sum(v / 100 if k == "accuracy_drop" else v for k, v in misses.items())

    def judge(self, result: TuneResult) -> TuneResult:
        """``result`` with every setting judged on the whole budget, the accuracy drop against
        its undefended setting included, and the most accurate setting that meets it as
        ``best``."""
        undefended = result.evaluated.get(Setting())
        ref = None if undefended is None else undefended.accuracy.mean
        misses = {s: self.misses(v, ref) for s, v in result.evaluated.items()}
        passing = {s: not m for s, m in misses.items()}
        ok = [s for s in result.evaluated if passing[s]]
        best = max(ok, key=lambda s: result.evaluated[s].accuracy.mean, default=None)
        return replace(
            result,
            best=None if best is None else result.evaluated[best],
            passing=passing,
            misses=misses,
            reference_accuracy=ref,
        )


def tune(
    spec: SweepSpec,
    out: str | Path,
    *,
    knobs: Sequence[Knob],
    budget: Budget,
    iterations: int = 3,
    jobs: int = 1,
    quiet: bool = False,
    attack_budget: int | None = None,
    searcher: Searcher | None = None,
) -> TuneResult:
    """Search ``knobs`` for the most accurate setting within ``budget`` (module docstring).

    Every evaluated setting is a run of the sweep in ``out`` (``spec``'s settings are ignored),
    so ``nopeek report --sweep OUT`` shows the search; ``OUT/tune.json`` holds the answer. An
    image-only limit on other data is refused before anything runs. The answer is certified
    by re-attacking it at full strength (:func:`nopeek.eval.certify.certify_best`: the family
    search of every attack, ``attack_budget`` configurations each, on every seed's run, or
    ``searcher``); one that fails gives way to the next most accurate.
    """
    from nopeek.eval._compat import data_kind
    from nopeek.eval.summary import summarize
    from nopeek.eval.sweep import run_sweep

    budget.check_data(data_kind(spec.base), spec.base.dataset)
    if attack_budget is not None:
        from nopeek.attacks.search import check_budget

        check_budget(attack_budget)  # refused before anything trains
    searcher = searcher or default_searcher(spec, attack_budget)

    done: list[Setting] = []

    def evaluate(new: list[Setting]) -> dict[Setting, SettingSummary]:
        done.extend(new)
        sweep = replace(spec, settings=list(done))
        by_slug = {s.setting: s for s in summarize(run_sweep(sweep, out, jobs=jobs, quiet=quiet))}
        return {s: by_slug[s.slug] for s in new}

    leakage_only = replace(budget, max_accuracy_drop=None)  # monotone in a knob's strength
    result = budget.judge(search(knobs, evaluate, leakage_only.ok, iterations=iterations))
    result = certify_best(result, spec, out, budget, searcher)
    atomic_write_json(Path(out) / "tune.json", tune_json(result, budget, spec))
    return result


def tune_json(result: TuneResult, budget: Budget, spec: SweepSpec) -> dict:
    """The answer and every candidate, flat (what ``OUT/tune.json`` holds); with no answer,
    ``closest`` names the setting that missed by the least and its ``misses``."""

    def mean(stat):
        return None if stat is None else stat.mean

    ref = result.reference_accuracy
    cands = [
        {
            "setting": s.slug,
            "label": s.label,
            "alpha": s.alpha,
            "defenses": list(s.defenses),
            "accuracy": v.accuracy.mean,
            "accuracy_drop": None if ref is None else accuracy_drop(v, ref),
            "leak": mean(v.leakage),
            "best_ssim": mean(v.best_ssim),
            "label_auc": mean(v.label_auc),
            "meets_budget": ok,
            "misses": result.misses.get(s, {}),
        }  # fmt: skip
        for s, v, ok in result.candidates()
    ]
    closest = result.closest()
    certs = result.certificates
    for cand, (s, _, _) in zip(cands, result.candidates(), strict=True):
        cand["certified"] = certs[s].certified if s in certs else None
        cand["margin"] = certs[s].margin if s in certs else None
    cert = result.certificate
    return {
        "max_leak": budget.max_leak,
        "max_ssim": budget.max_ssim,
        "max_label_auc": budget.max_label_auc,
        "max_accuracy_drop": budget.max_accuracy_drop,
        "reference_accuracy": ref,
        "attacks": list(spec.attacks),
        "seeds": list(spec.seeds),
        "best": None if result.best is None else result.best.setting,
        "best_label": None if result.best is None else result.best.label,
        "closest": None if closest is None else closest.slug,
        "closest_label": None if closest is None else closest.label,
        "closest_misses": None if closest is None else result.misses[closest],
        "knob_best": result.knob_best,
        "certificate": None if cert is None else cert.to_json(),
        "margin": None if cert is None else cert.margin,
        "certifications": [c.to_json() for c in certs.values()],
        "candidates": cands,
    }
