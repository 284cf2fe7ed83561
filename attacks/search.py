"""The strongest attacker, searched for: each attack as a family over its strength knobs.

A leakage number is a lower bound set by its attacker, so a verdict is the worst case over an
attack *family*: the attack at every configuration of its knobs that a budget allows, over
several attack seeds. An attack declares its knobs and their candidate values on its class
(:attr:`~nopeek.attacks.Attack.search_space`, adapted to the attacked run by
:meth:`~nopeek.attacks.Attack.family`: what the attacker knows of the defense's mechanism,
Kerckhoffs); this module names no attack.

The search (:func:`strongest`) is successive halving (Jamieson & Talwalkar 2016) over a seeded
sample of the grid:

1. draw ``budget`` distinct configurations: the family's first candidates (the attack's
   defaults) and ``budget - 1`` more, uniformly without replacement, from a generator seeded by
   the attack seed;
2. rung ``r`` of ``R`` runs every configuration still in at ``eta ** -(R - 1 - r)`` of its steps,
   then keeps the best ``1 / eta`` by ``leak`` (at least one; ties by draw order);
3. the last rung runs the survivor at its full steps over ``seeds`` attack seeds (seed, seed + 1,
   ...); the first configuration (the defaults) always runs once at full steps too, so the
   verdict is never below what ``nopeek attack`` reports at default strength (against an
   adversarial defender, the first configuration is the defaults with a wider decoder).

``budget`` counts the configurations at the first rung (``--attack-budget``); the attack runs
``budget + budget // eta + ... + seeds`` times, plus one when the defaults did not win.

The verdict (:class:`Strongest`) is the worst case, the largest ``leak`` of every attack run of
the search, with the configuration, seed and steps that reached it, and the survivor's leak over
its seeds: mean, a t-based 95 % confidence interval, max. It is written atomically to
``RUN/attacks/<attack>.strongest.json`` with every member's result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nopeek.attacks._sending import Sender
from nopeek.attacks.base import Attack, AttackInputs, Known, check_options
from nopeek.attacks.halving import ETA, sample_configs, successive_halving
from nopeek.attacks.harness import _prepare, run_attack
from nopeek.attacks.registry import ATTACKS
from nopeek.attacks.result import AttackResult, Member, Strongest
from nopeek.config import SEED_MAX, TrainConfig, check_seed
from nopeek.errors import ConfigError
from nopeek.io import atomic_write_json
from nopeek.rundir import RunDir

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 4
"""Configurations at the first rung by default: 4, 2, then 1 over :data:`DEFAULT_SEEDS` seeds."""
DEFAULT_SEEDS = 3
BUDGET_KNOBS = ("steps", "aux_size")  # knobs that are run_attack's arguments, not options
# (run config) -> decoder kind -> width of the data party's own simulated decoder
DefenderDecoders = Callable[[TrainConfig], Mapping[str, int]]


def leak_of(result: AttackResult) -> float:
    """The normalised leak in [0, 1] the search ranks by: the result's ``leak`` (0 = no better
    than a blind guess, 1 = exact; :mod:`nopeek.attacks.leak`)."""
    if result.leak is None:
        raise ConfigError(
            f"{result.attack} has no leak on {result.run} (a label attack whose AUC is undefined: "
            "one class only), so the search has nothing to rank by; attack another cut or run"
        )
    return float(result.leak)


def check_budget(budget: Any) -> int:
    """``--attack-budget``: a whole number >= 1 (configurations at the first rung).

    >>> check_budget(4)
    4
    >>> check_budget(0)
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: --attack-budget must be a whole number >= 1 (configurations \
at the first rung), got 0
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(
            "--attack-budget must be a whole number >= 1 (configurations at the first rung), "
            f"got {budget!r}"
        )
    return budget


# --- the search on a run ----------------------------------------------------------------------


def _stem(name: str, cut: str, first_cut: str, party: str | None) -> str:
    """The file stem ``nopeek attack`` writes the attack's result under (``name@cut@party``)."""
    stem = name if cut == first_cut else f"{name}@{cut}"
    return stem + (f"@{party}" if party is not None else "")


def _own_cut_shape(inputs: AttackInputs) -> tuple[int, ...]:
    """The cut shape from the attacker's own segment on two of its own inputs, for an attack
    that observes no message (model completion)."""
    own = inputs.own_train_inputs if inputs.own_train_inputs is not None else inputs.need("aux")
    with torch.no_grad():
        return tuple(inputs.need("client_segment").eval()(own.x[:2]).shape[1:])


def known_about(
    run_dir: Path,
    name: str,
    *,
    cut: str | None = None,
    party: str | None = None,
    observations: str | Path | None = None,
    sender: Sender | None = None,
    defender_decoders: DefenderDecoders | None = None,
) -> tuple[Attack, Known, str, Path]:
    """What the attacker of ``name`` knows of the run (:class:`~nopeek.attacks.base.Known`),
    its attack object, the attacked cut and the path of its search result (in the attacker's
    own folder of a distributed run, as :func:`~nopeek.attacks.run_attack` writes there).

    Fresh noise is found by sending the same message twice through ``sender`` (the deployed
    client's defenses); ``defender_decoders(config)`` names the client's own simulated
    decoders (:func:`nopeek.defenses.knowledge.simulated_decoders`).
    """
    attack, run, inputs = _prepare(
        run_dir, name, cut, party, 0, None, 1, observations, sender=sender
    )
    observed = (inputs.activations, inputs.gradients, inputs.sent_activations)
    seen = next((o for o in observed if o is not None), None)
    cut_shape = tuple(seen.tensor.shape[1:]) if seen is not None else _own_cut_shape(inputs)
    fresh = False
    if run.config.defenses and sender is not None:
        send, probe = sender(run.config, run.cut, 0), torch.ones((2, *cut_shape))
        fresh = not torch.equal(send(probe), send(probe))
    widths = dict(defender_decoders(run.config)) if defender_decoders is not None else {}
    known = Known(cut_shape, tuple(inputs.input_shape), fresh, widths)
    stem = _stem(name, run.cut, run.topology.edges()[0].cut, party)
    home = run.folders.home if run.folders else run_dir  # a distributed run: the attacker's
    return attack, known, run.cut, home / RunDir.ATTACKS / f"{stem}.strongest.json"


def strongest(
    run_dir: str | Path,
    name: str,
    *,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    seeds: int = DEFAULT_SEEDS,
    eta: int = ETA,
    pinned: Mapping[str, Any] | None = None,
    n_samples: int | None = None,
    cut: str | None = None,
    party: str | None = None,
    observations: str | Path | None = None,
    sender: Sender | None = None,
    defender_decoders: DefenderDecoders | None = None,
    write: bool = True,
) -> Strongest:
    """Search the family of attack ``name`` on the run in ``run_dir`` (module docstring).

    ``pinned`` fixes knobs (``{"width": 64}``) and passes other options to every member;
    ``steps`` / ``aux_size`` there pin those budget knobs. ``n_samples``, ``cut``, ``party``,
    ``observations`` and ``sender`` are :func:`~nopeek.attacks.run_attack`'s.
    ``defender_decoders`` (the defense-side knowledge, e.g.
    :func:`nopeek.defenses.knowledge.simulated_decoders`) lets a decoder family build only
    decoders wider than the client's own simulated attacker. With ``write``, the result goes
    to ``run_dir/attacks/<stem>.strongest.json``.
    """
    started = time.perf_counter()
    check_search(name, budget, seed, seeds, pinned)
    run_dir = Path(run_dir)
    attack, known, at_cut, where_to = known_about(
        run_dir,
        name,
        cut=cut,
        party=party,
        observations=observations,
        sender=sender,
        defender_decoders=defender_decoders,
    )
    where = dict(n_samples=n_samples, cut=cut, party=party, observations=observations)

    def runner(config: dict[str, Any], steps: int | None, attack_seed: int) -> AttackResult:
        options = {k: v for k, v in config.items() if k not in BUDGET_KNOBS}
        aux_size = config.get("aux_size")
        return run_attack(
            run_dir, name, steps=steps, aux_size=aux_size, seed=attack_seed, options=options,
            write=False, sender=sender, **where,
        )  # fmt: skip

    result = search(
        attack, known, runner, budget=budget, seed=seed, seeds=seeds, eta=eta, pinned=pinned,
        run=str(run_dir), cut=at_cut,
    )  # fmt: skip
    result.seconds = time.perf_counter() - started
    if write:
        result.path = where_to
        result.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(result.path, result.to_json())
    return result


def check_search(
    name: str, budget: Any, seed: Any, seeds: Any, pinned: Mapping[str, Any] | None
) -> None:
    """Refuse a bad search in one line before anything runs: the budget, the seeds, an attack
    or pinned option the registry does not know."""
    check_budget(budget)
    check_seed(seed, what="--seed")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"the search needs seeds >= 1 attack seeds, got {seeds!r}")
    check_options(ATTACKS.get(name), dict(pinned or {}), shared=BUDGET_KNOBS)


# (config, steps, attack seed) -> the attack's scored result at that configuration
Runner = Callable[[dict[str, Any], int | None, int], AttackResult]


def search(
    attack: Attack,
    known: Known,
    runner: Runner,
    *,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    seeds: int = DEFAULT_SEEDS,
    eta: int = ETA,
    pinned: Mapping[str, Any] | None = None,
    run: str = "",
    cut: str = "",
) -> Strongest:
    """Successive halving of ``attack``'s family on what ``runner`` attacks (the run ``run``,
    cut ``cut``, for the record): every member in run order, the winning configuration and the
    space searched; ``pinned`` knobs have one candidate. The worst member keeps its output (the
    reconstructions), the others only their numbers. The harness-independent part of
    :func:`strongest` (an audit runs its members on an exported segment)."""
    started = time.perf_counter()
    space = attack.family(known) | {k: (v,) for k, v in (pinned or {}).items()}
    configs = sample_configs(space, budget, seed)
    if len(configs) < budget:
        log.info("%s: the grid has %d configurations, fewer than --attack-budget %d",
                 attack.name, len(configs), budget)  # fmt: skip
    run_seeds = [(seed + k) % (SEED_MAX + 1) for k in range(seeds)]
    members: list[Member] = []
    full = attack.default_steps

    def objective(i: int, fraction: float, attack_seed: int) -> float:
        config = configs[i]
        steps = config.get("steps", full)
        steps = None if steps is None else max(1, round(int(steps) * fraction))
        result = runner(config, steps, attack_seed)
        member = Member(config, None, fraction, steps, attack_seed, leak_of(result), result)
        worst = max(members, key=lambda m: m.leak, default=None)
        if worst is not None:  # only the worst case keeps its output (reconstructions)
            (worst.result if member.leak > worst.leak else result).output = None
        members.append(member)
        log.info("%s %s at %.3g of its steps, seed %d: leak %.4f",
                 attack.name, config, fraction, attack_seed, members[-1].leak)  # fmt: skip
        return members[-1].leak

    trials = successive_halving(len(configs), objective, eta=eta, seeds=run_seeds)
    for member, trial in zip(members, trials, strict=True):
        member.rung = trial.rung
    winner = trials[-1].config
    if winner != 0:  # the defaults at full strength: never below the attack at its defaults
        objective(0, 1.0, run_seeds[0])
    return Strongest(
        attack=attack.name,
        run=run,
        cut=cut,
        party=members[0].result.party,
        threat_model=attack.threat_model.describe(),
        known=known,
        budget=budget,
        eta=eta,
        seeds=sorted({m.seed for m in members}),
        space={k: tuple(v) for k, v in space.items()},
        members=members,
        winner=configs[winner],
        seconds=time.perf_counter() - started,
    )


def search_options(
    attack: Attack,
    known: Known,
    run_one: Callable[..., AttackResult],
    *,
    options: Mapping[str, Any],
    steps: int | None,
    seed: int,
    budget: int = DEFAULT_BUDGET,
    run: str = "",
    cut: str = "",
) -> Strongest:
    """:func:`search` for a harness whose ``run_one(steps=, seed=, options=)`` attacks with
    the attacker's whole aux data (an audit): ``options`` and ``steps`` (when given) pin those
    knobs, and a family that searches the aux size is refused."""
    pinned = dict(options) | ({"steps": steps} if steps is not None else {})

    def runner(config: dict[str, Any], steps: int | None, attack_seed: int) -> AttackResult:
        if config.get("aux_size") is not None:
            raise ConfigError(f"{attack.name}: this attacker holds the whole aux data; no aux_size")
        opts = {k: v for k, v in config.items() if k not in BUDGET_KNOBS}
        return run_one(steps=steps, seed=attack_seed, options=opts)

    return search(attack, known, runner, budget=budget, seed=seed, pinned=pinned, run=run, cut=cut)


def worst_of(results: Sequence[Strongest]) -> Strongest:
    """The verdict over several attacks' searches: the one with the largest worst case."""
    if not results:
        raise ConfigError("no attack was searched; name one with --attack")
    return max(results, key=lambda r: r.leak)
