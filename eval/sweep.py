"""Sweeps: train one run per setting x seed, attack each run, collect one table.

Layout of a sweep directory::

    <out>/.nopeek.json           marks a folder nopeek wrote (see :mod:`nopeek.rundir`)
    <out>/sweep.json             what was asked (base config, settings, seeds, attacks)
    <out>/runs/<slug>-seed<k>/   an ordinary run directory (config.json, metrics.json, ...,
                                 attacks/<attack>.json and .png)
    <out>/results.csv, .json     one row per run x attack (see :mod:`nopeek.eval.results`)

A run is finished when its ``metrics.json`` and every requested attack's JSON exist; a sweep
started again reuses finished runs, resumes an interrupted training from its checkpoint and
runs only the missing attacks. Each run uses one thread, so ``jobs=N`` uses N cores and gives
the same numbers as ``jobs=1``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nopeek import schema as S
from nopeek.attacks.spec import BUDGET_KEYS
from nopeek.config import TrainConfig, check_seed
from nopeek.errors import CheckpointError, ConfigError
from nopeek.eval.results import collect_rows, write_results
from nopeek.eval.settings import Setting, parse_attack
from nopeek.io import atomic_write_json
from nopeek.rundir import RunDir, kind_of, write_marker
from nopeek.workers import worker_context

log = logging.getLogger(__name__)

ATTACK_OPTIONS = BUDGET_KEYS  # the options of run_attack every attack spec may set for itself


@dataclass
class SweepSpec:
    """A sweep: ``base`` config (its alpha, defenses and seed are replaced per run).

    ``attacks`` are attack specs (``name[:key=value,...]``, see
    :func:`~nopeek.eval.settings.parse_attack`); ``attack_options`` the shared ``steps``,
    ``aux_size`` and ``n_samples`` of :func:`nopeek.attacks.run_attack`, which an attack spec
    may override for its attack (``white-box:steps=300,n_samples=64``).
    """

    base: TrainConfig
    settings: list[Setting]
    seeds: list[int]
    attacks: list[str]
    attack_options: dict[str, int | None] = field(default_factory=dict)

    def runs(self) -> list[tuple[Setting, int]]:
        """Every (setting, seed), setting-major (the order of results.csv)."""
        return [(s, seed) for s in self.settings for seed in self.seeds]

    @property
    def attack_names(self) -> list[str]:
        return [parse_attack(a)[0] for a in self.attacks]

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "settings": [
                {"alpha": s.alpha, "defenses": list(s.defenses), "compress": s.compress}
                for s in self.settings
            ],
            "seeds": list(self.seeds),
            "attacks": list(self.attacks),
            "attack_options": dict(self.attack_options),
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str = "sweep.json") -> SweepSpec:
        """The spec saved as ``data``; a missing or mistyped field is a one-line ConfigError
        naming ``where`` and the field."""
        fix = "fix it, or redo the sweep with `nopeek sweep --overwrite`"
        kw = {"where": where, "fix": fix}
        strings = S.list_of(S.is_str)
        base = S.take(data, "base", S.is_dict, "a JSON object", **kw)
        settings = []
        for k, item in enumerate(S.take(data, "settings", S.list_of(S.is_dict), "a list", **kw)):
            at = {"where": f"{where} settings[{k}]", "fix": fix}
            alpha = S.take(item, "alpha", S.is_number, "a number", **at)
            defenses = S.take(item, "defenses", strings, "a list of strings", **at)
            compress = ""  # sweeps from before compressors have none
            if "compress" in item:
                compress = S.take(item, "compress", S.is_str, "a string", **at)
            settings.append(Setting(float(alpha), tuple(defenses), compress))
        seeds = S.take(data, "seeds", S.list_of(S.is_int), "a list of integers", **kw)
        for seed in seeds:
            check_seed(seed, what=f"{where} field 'seeds'")
        options = S.take(
            data, "attack_options", S.dict_of(S.optional(S.is_int)), "integers or null", **kw
        )
        return cls(
            TrainConfig.from_dict(base, where=f"{where} field 'base'"),
            settings,
            list(seeds),
            list(S.take(data, "attacks", strings, "a list of attack specs", **kw)),
            dict(options),
        )


def run_dir(out: str | Path, setting: Setting, seed: int) -> Path:
    """Where the run of ``setting`` with ``seed`` lives inside sweep ``out``."""
    return Path(out) / RunDir.RUNS / f"{setting.slug}-seed{seed}"


def load_spec(out: str | Path) -> SweepSpec:
    """The spec saved in ``out/sweep.json`` (its schema checked: one line naming a bad field)."""
    folder = RunDir.open(out, "sweep")
    return SweepSpec.from_json(folder.sweep(), where=str(folder.path / RunDir.SWEEP))


def is_finished(path: Path, attacks: Sequence[str], config: TrainConfig) -> bool:
    """Trained (metrics.json) and every attack in ``attacks`` done on every edge it targets
    (``attacks/<stem>.json``, see :func:`~nopeek.eval._compat.attack_targets`)."""
    from nopeek.eval._compat import attack_targets

    folder = RunDir(path, "run")
    names = [parse_attack(a)[0] for a in attacks]
    stems = [stem for a in names for stem, _ in attack_targets(config, a)]
    return folder.has(RunDir.METRICS) and all(folder.has_attack(s) for s in stems)


def validate(spec: SweepSpec) -> None:
    """Check every setting, attack and option before anything trains (one-line errors)."""
    from nopeek.eval._compat import check_attacks_fit, check_defenses, n_classes

    if not spec.seeds:
        raise ConfigError("a sweep needs at least one seed; pass e.g. --seeds 0,1")
    for seed in spec.seeds:
        check_seed(seed, what="--seeds")
    k = n_classes(spec.base) if any(s.defenses for s in spec.settings) else 0
    for setting in spec.settings:
        setting.config(spec.base, seed=spec.seeds[0]).validate()
        check_defenses(setting.defenses, n_classes=k, alpha=setting.alpha, delta=spec.base.delta)
    check_attacks_fit(spec.base, spec.attacks)
    bad = sorted(set(spec.attack_options) - set(ATTACK_OPTIONS))
    if bad:
        raise ConfigError(f"unknown attack options {bad}; use {', '.join(ATTACK_OPTIONS)}")


def _check_same_sweep(out: Path, spec: SweepSpec) -> None:
    """Reusing ``out`` is fine for more settings/seeds/attacks, not for other options."""
    if not RunDir(out, "sweep").has(RunDir.SWEEP):
        return
    old = load_spec(out)
    per_setting = {"alpha": 0.0, "defenses": [], "compress": None, "seed": 0}
    mine = spec.base.to_dict() | per_setting
    theirs = old.base.to_dict() | per_setting
    diff = [k for k in mine if mine[k] != theirs[k]]
    old_specs = {parse_attack(a)[0]: a for a in old.attacks}
    changed = any(old_specs.get(parse_attack(a)[0], a) != a for a in spec.attacks)
    if old.attack_options != spec.attack_options or changed:
        diff.append("attack options")
    if diff:
        raise ConfigError(
            f"sweep {out} was made with other {', '.join(diff)}; use another --out, the same "
            "options, or --overwrite"
        )


def run_sweep(
    spec: SweepSpec, out: str | Path, *, jobs: int = 1, overwrite: bool = False, quiet: bool = False
) -> list[dict[str, Any]]:
    """Train and attack every run of ``spec`` in ``out``; write and return the result rows."""
    return run_sweeps([(spec, out)], jobs=jobs, overwrite=overwrite, quiet=quiet)[0]


def run_sweeps(
    sweeps: Sequence[tuple[SweepSpec, str | Path]],
    *,
    jobs: int = 1,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[list[dict[str, Any]]]:
    """Several sweeps sharing one progress bar and one pool of ``jobs`` worker processes.

    Everything (every spec, and every ``out``: see :class:`nopeek.rundir.RunDir`) is checked
    before anything is written. An existing sweep is continued in place; a new one that fails
    before any of its runs finished leaves nothing behind; with ``overwrite`` (only of a sweep
    nopeek wrote) the new sweep is built beside the old one, which it replaces only once it
    is complete. Returns each sweep's rows.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    sweeps = [(spec, Path(out)) for spec, out in sweeps]
    folders = []
    for spec, out in sweeps:
        validate(spec)
        folders.append(RunDir(out, "sweep"))
        folders[-1].plan(overwrite=overwrite, reuse=True)
        if not overwrite:
            _check_same_sweep(out, spec)
    with ExitStack() as stack:  # nothing is written before this line
        where = [
            stack.enter_context(f.writing(overwrite=overwrite, reuse=True, keep=_has_finished_run))
            for f in folders
        ]
        return _run_all([(spec, w) for (spec, _), w in zip(sweeps, where)], jobs, quiet)


def _has_finished_run(out: Path) -> bool:
    """Whether sweep ``out`` holds a trained run (kept when a new sweep fails later)."""
    return any(out.glob(f"{RunDir.RUNS}/*/{RunDir.METRICS}"))


def _run_all(sweeps: list[tuple[SweepSpec, Path]], jobs: int, quiet: bool) -> list[list[dict]]:
    tasks = []
    for spec, out in sweeps:
        atomic_write_json(out / RunDir.SWEEP, spec.to_json())
        tasks += [_task(spec, out, s, seed) for s, seed in spec.runs()]
    todo = [
        t
        for t in tasks
        if not is_finished(Path(t["run_dir"]), t["attacks"], TrainConfig.from_dict(t["config"]))
    ]
    log.info("%d runs, %d to do", len(tasks), len(todo))
    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
        desc="sweep",
        unit="run",
        disable=True if quiet else None,  # None: off when stderr is not a terminal
    )
    try:
        if jobs == 1 or len(todo) <= 1:
            for task in todo:
                run_task(task)
                bar.update(1)
        else:
            _run_parallel(todo, jobs, bar)
    finally:
        bar.close()
    results = []
    for spec, out in sweeps:
        rows = collect_rows(out, spec)
        write_results(out, rows)
        results.append(rows)
    return results


def _task(spec: SweepSpec, out: Path, setting: Setting, seed: int) -> dict[str, Any]:
    """A picklable description of one run for a worker process."""
    return {
        "config": setting.config(spec.base, seed=seed).to_dict(),
        "run_dir": str(run_dir(out, setting, seed)),
        "attacks": list(spec.attacks),
        "attack_options": dict(spec.attack_options),
    }


def _cost(task: dict[str, Any]) -> float:
    """A rough relative cost (NoPeek's dCor makes a step ~2.5x dearer), to start long runs first."""
    config = task["config"]
    return config["epochs"] * (2.5 if config["alpha"] else 1.0)


def _run_parallel(todo: list[dict], jobs: int, bar) -> None:
    todo = sorted(todo, key=_cost, reverse=True)
    ctx = worker_context()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(run_task, t) for t in todo}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                if future.exception() is not None:
                    pool.shutdown(cancel_futures=True)
                    raise future.exception()
                bar.update(1)


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and run its missing attacks, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig.from_dict(task["config"])
        path = Path(task["run_dir"])
        trained = _ensure_trained(config, path)
        attacked = _ensure_attacked(path, task["attacks"], task["attack_options"], config)
    finally:
        torch.set_num_threads(before)
    return {"run_dir": str(path), "trained": trained, "attacked": attacked}


def _ensure_trained(config: TrainConfig, path: Path) -> bool:
    """Train ``config`` into ``path`` unless a matching finished run is there already.

    An unfinished run is resumed, or else trained anew beside it and swapped in at the end.
    """
    from nopeek.training.trainer import train

    expected = json.loads(json.dumps(config.resolved().to_dict()))
    folder = RunDir(path, "run", fix=f"delete {path} and rerun the sweep to redo that run")
    if folder.has(RunDir.CONFIG):
        saved = folder.read_json(RunDir.CONFIG)  # compared as saved: an older one differs
        if saved != expected:
            diff = sorted(k for k in expected if saved.get(k) != expected[k])
            raise ConfigError(
                f"run {path} was trained with other {', '.join(diff)}; use another --out or "
                "--overwrite"
            )
        if folder.has(RunDir.METRICS):
            return False
        if kind_of(path) is None:  # an unfinished run of this sweep from before markers
            write_marker(path, "run")  # is nopeek's: let --overwrite below replace it
    resume = folder.checkpoint_path.is_file()
    if resume:
        try:
            train(config, path, resume=True, quiet=True)
            return True
        except (CheckpointError, ConfigError) as exc:  # e.g. crashed after the last epoch
            log.warning("cannot resume %s (%s); training it again", path, exc)
    train(config, path, overwrite=True, quiet=True)
    return True


def _ensure_attacked(
    path: Path, attacks: list[str], options: dict, config: TrainConfig
) -> list[str]:
    from nopeek.attacks import run_attack
    from nopeek.defenses import run_sender
    from nopeek.eval._compat import attack_targets

    done, folder = [], RunDir(path, "run")
    for spec in attacks:
        name, extra = parse_attack(spec)
        kw = dict(options) | {k: extra.pop(k) for k in ATTACK_OPTIONS if k in extra}
        for stem, party in attack_targets(config, name):
            if folder.has_attack(stem):
                continue
            opts = dict(extra) or None
            run_attack(
                path, name, seed=config.seed, party=party, options=opts, sender=run_sender, **kw
            )
            done.append(stem)
    return done
