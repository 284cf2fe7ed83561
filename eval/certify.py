"""Certify a tuned setting: re-attack every seed's run at full strength before calling it safe.

``nopeek tune`` screens settings with cheap attacks (mean over seeds); a leakage number is only a
lower bound set by its attacker, so the answer is certified only after the strongest attacker
that a budget can find has failed on it: on each seed's run of the setting, every ``--attack``
runs as a family (:func:`nopeek.attacks.search.strongest`: its strength knobs searched by
successive halving, over attack seeds, knowing the defense's mechanism), and the worst case over
the runs, the attacks and their families must stay within the budget. Its distance to the budget
is the *margin* (budget - searched worst case; the smallest over the budget's limits).

A setting that fails is not certified: :func:`certify_best` goes on with the next most accurate
setting that passed the screening, and gives none when every one fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nopeek.eval.settings import Setting

if TYPE_CHECKING:
    from nopeek.attacks.search import Strongest
    from nopeek.eval.sweep import SweepSpec
    from nopeek.eval.tune import Budget, TuneResult

# (run dir, attack name, party or None, attack seed) -> the family search of that attack there
Searcher = Callable[[Path, str, "str | None", int], "Strongest"]
# budget limit -> (the searched value it bounds, whether equality passes)
_LIMITS = {"max_leak": ("leak", True), "max_ssim": ("ssim", False)}
_LIMITS["max_label_auc"] = ("label_auc", True)


@dataclass
class Certificate:
    """The re-attack of one setting: the searched worst cases (``leak``; ``ssim``, the largest
    SSIM any member reached; ``label_auc``, the largest worst-epoch folded AUC), the
    ``margins`` to the budget's limits (limit - worst case), ``margin`` (the smallest),
    whether it holds (``certified``), the search that reached the worst leak (``worst``) and
    every search (``searches``: run, attack, party, leak, file)."""

    setting: Setting
    certified: bool
    leak: float
    ssim: float | None
    label_auc: float | None
    margins: dict[str, float]
    worst: dict[str, Any]
    searches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def margin(self) -> float | None:
        return min(self.margins.values(), default=None)

    def to_json(self) -> dict[str, Any]:
        keys = ("certified", "leak", "ssim", "label_auc", "margins", "worst", "searches")
        head = {"setting": self.setting.slug, "label": self.setting.label, "margin": self.margin}
        return head | {k: getattr(self, k) for k in keys}


def _max(values) -> float | None:
    found = [float(v) for v in values if v is not None]
    return max(found, default=None)


def certify(
    setting: Setting,
    runs: Sequence[tuple[Path, int]],
    attacks: Sequence[str],
    budget: Budget,
    searcher: Searcher,
    targets: Callable[[Path, str], list[str | None]] = lambda run, name: [None],
) -> Certificate:
    """Search every attack in ``attacks`` on every ``(run dir, seed)`` of ``runs`` (at each
    party ``targets(run, attack)`` names; None: the default edge) with ``searcher`` and judge
    the worst case against ``budget`` (module docstring).

    >>> from types import SimpleNamespace as NS
    >>> def fake(run, name, party, seed):  # a search whose worst leak is 0.1 * the seed
    ...     member = NS(result=NS(ssim=None, auc_folded_max=None))
    ...     worst = NS(config={"width": 64}, seed=seed, steps=1000)
    ...     return NS(leak=0.1 * seed, members=[member], worst=worst, attack=name, path=None)
    >>> budget = NS(max_leak=0.25, max_ssim=None, max_label_auc=None)
    >>> c = certify(Setting(), [("a", 1), ("b", 2)], ["white-box"], budget, fake)
    >>> c.certified, round(c.leak, 3), round(c.margin, 3), c.worst["run"]
    (True, 0.2, 0.05, 'b')
    """
    searches = []
    for run, seed in runs:
        for name, party in [(n, p) for n in attacks for p in targets(Path(run), n)]:
            found = searcher(Path(run), name, party, seed)
            results = [m.result for m in found.members]
            searches.append({
                "run": str(run), "attack": name, "party": party, "seed": seed,
                "leak": found.leak, "ssim": _max(r.ssim for r in results),
                "label_auc": _max(r.auc_folded_max for r in results),
                "config": found.worst.config, "attack_seed": found.worst.seed,
                "steps": found.worst.steps, "path": None if found.path is None else str(found.path),
            })  # fmt: skip
    worst = max(searches, key=lambda s: s["leak"])
    values = {key: _max(s[key] for s in searches) for key in ("leak", "ssim", "label_auc")}
    margins, holds = {}, True
    for limit, (key, equal_ok) in _LIMITS.items():
        bound = getattr(budget, limit)
        if bound is None or values[key] is None:
            continue
        margins[key] = bound - values[key]
        holds &= margins[key] >= 0 if equal_ok else margins[key] > 0
    return Certificate(setting, holds, values["leak"], values["ssim"], values["label_auc"],
                       margins, worst, searches)  # fmt: skip


def default_searcher(spec: SweepSpec, attack_budget: int | None = None) -> Searcher:
    """The full search, as ``nopeek attack --strongest`` runs it: every knob free, except that
    the sweep's shared ``steps`` / ``aux_size`` (``--steps``, ``--aux-size``) pin them and its
    ``n_samples`` sets the victims; the run's defenses answer the queries
    (:func:`~nopeek.defenses.run_sender`) and name the client's own decoders."""
    from nopeek.attacks.search import DEFAULT_BUDGET, strongest
    from nopeek.defenses import run_sender
    from nopeek.defenses.knowledge import simulated_decoders

    shared = {k: v for k, v in (spec.attack_options or {}).items() if v is not None}
    pinned = {k: shared[k] for k in ("steps", "aux_size") if k in shared}

    def search(run: Path, name: str, party: str | None, seed: int) -> Strongest:
        return strongest(
            run, name, budget=attack_budget or DEFAULT_BUDGET, seed=seed, pinned=pinned,
            n_samples=shared.get("n_samples"), party=party, sender=run_sender,
            defender_decoders=simulated_decoders,
        )  # fmt: skip

    return search


def run_targets(run: Path, name: str) -> list[str | None]:
    """The parties a sweep attacks with ``name`` on ``run`` (one per client where several)."""
    from nopeek.eval._compat import attack_targets
    from nopeek.rundir import RunDir

    return [party for _, party in attack_targets(RunDir(run, "run").config(), name)]


def certify_best(
    result: TuneResult,
    spec: SweepSpec,
    out: str | Path,
    budget: Budget,
    searcher: Searcher,
    targets: Callable[[Path, str], list[str | None]] = run_targets,
) -> TuneResult:
    """``result`` with ``best`` the most accurate screened setting that also holds under the
    full search (none if every one fails), and every certificate tried, in order."""
    from nopeek.eval.sweep import run_dir

    names = list(dict.fromkeys(spec.attack_names))
    passed = [s for s, ok in result.passing.items() if ok]
    passed.sort(key=lambda s: -result.evaluated[s].accuracy.mean)
    certificates: dict[Setting, Certificate] = {}
    for setting in passed:
        runs = [(run_dir(out, setting, seed), seed) for seed in spec.seeds]
        cert = certify(setting, runs, names, budget, searcher, targets)
        certificates[setting] = cert
        if cert.certified:
            return replace(result, best=result.evaluated[setting], certificates=certificates)
    return replace(result, best=None, certificates=certificates)
