"""The benchmark: an attack x defense grid over configurations and data sets, over seeds.

A grid is data (:class:`BenchmarkSpec`, saved as ``benchmark.json``): split configurations
(:data:`CONFIGURATIONS`: vanilla, U-shaped, vertical with two clients), data sets (the bundled
digits and breast-cancer; MNIST and CIFAR-10 where ``--data-root`` holds them), defense settings
(``none``, ``alpha=A`` for NoPeek, any registered defense spec, joined with ``+``), attacks (any
registered attack, with its options) and seeds. Every configuration x data set is an ordinary
sweep (:mod:`nopeek.eval.sweep`) under ``OUT/sweeps/<configuration>-<dataset>``, so finished
runs are reused and an interrupted one resumes; each run is then attacked, reusing every attack
result already on disk. A cell is one (configuration, data set, defense, attack).

Where an attack or a defense does not apply, the cell says why instead of failing: known before
training (an attack's :meth:`~nopeek.attacks.Attack.refusal`, a binary-only label attack on a
multi-class task, a defense the configuration refuses) or at attack time (the harness's
one-line refusals, kept in ``OUT/refusals.json`` so a rerun does not try again).

The table (:mod:`nopeek.eval.benchmark_table`) gives per cell the leak and accuracy, mean and
sample std over seeds, and per defense setting VFLAIR's DCS / T-DCS / C-DCS
(:mod:`nopeek.eval.dcs`); OUT/table.md, table.csv, table.json and heatmap.png.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nopeek.config import TrainConfig, check_seed
from nopeek.data.bundled import DEFAULT_MODELS as DEFAULT_MODEL
from nopeek.errors import ConfigError, CutError, CutShapeError, ThreatModelError
from nopeek.eval.settings import Setting, parse_attack
from nopeek.eval.sweep import ATTACK_OPTIONS, SweepSpec, run_dir, run_sweeps, validate
from nopeek.io import atomic_write_json
from nopeek.workers import worker_context

log = logging.getLogger(__name__)

BUNDLED = ("digits", "breast-cancer")
VISION = ("mnist", "cifar10")  # added to the default grid where --data-root holds their files
DEFAULT_DEFENSES = ("none", "alpha=1", "cut-noise:gaussian,sigma=0.5,clip=1")
DEFAULT_ATTACKS = ("white-box", "inverse-network", "fora", "grn", "norm")
DEFAULT_TRAIN = {"epochs": 8, "dcor_samples": 200, "record_samples": 128}
DEFAULT_STEPS = 200
REFUSALS = "refusals.json"
SPEC = "benchmark.json"
# What an attack or a training run raises when it does not apply (one line, no traceback)
NOT_APPLICABLE = (ConfigError, CutError, CutShapeError, ThreatModelError)


def _u_cuts(dataset: str, data_root: str | None) -> str:
    """U-shaped: the model's default cut for the head, its last cut for the tail."""
    from nopeek.models import MODELS

    model = MODELS.get(DEFAULT_MODEL.get(dataset, "mlp"))
    return f"{model.default_cut},{model.cuts[-1]}"


CONFIGURATIONS: dict[str, Callable[[str, str | None], dict[str, Any]]] = {
    "vanilla": lambda ds, root: {"topology": "vanilla"},
    "u-shaped": lambda ds, root: {"topology": "u-shaped", "cut": _u_cuts(ds, root)},
    "vertical": lambda ds, root: {"topology": "vertical", "clients": 2},
}
"""Configuration name -> the :class:`~nopeek.config.TrainConfig` fields it sets for a data set."""


def default_datasets(data_root: str | None) -> list[str]:
    """The bundled sets, and MNIST / CIFAR-10 where ``data_root`` holds their files."""
    from nopeek.data.vision import VISION_SPECS, missing_files

    found = []
    if data_root is not None and Path(data_root).is_dir():
        found = [v for v in VISION if not missing_files(VISION_SPECS[v], Path(data_root))]
    return [*BUNDLED, *found]


def parse_defense(text: str) -> Setting:
    """A grid defense: ``none``, ``alpha=A`` (NoPeek), defense specs joined with ``+``, or
    ``alpha=A+spec...``.

    >>> parse_defense("alpha=1+max-norm")
    Setting(alpha=1.0, defenses=('max-norm',), compress='')
    >>> parse_defense("none").undefended
    True
    """
    from nopeek.defenses import parse_defense_option

    head, plus, rest = text.strip().partition("+")
    alpha = 0.0
    if head.startswith("alpha="):
        try:
            alpha = float(head[len("alpha=") :])
        except ValueError:
            raise ConfigError(f"--defense {text!r}: alpha takes a number, e.g. alpha=1") from None
        text = rest if plus else "none"
    return Setting(alpha, tuple(parse_defense_option(text)))


@dataclass
class BenchmarkSpec:
    """The grid (module docstring). ``train``: TrainConfig fields every run shares (epochs,
    batch size, ``data_root``, ...); ``attack_options``: the shared ``steps``, ``aux_size``,
    ``n_samples`` of every attack, which an attack spec may override for itself."""

    configurations: list[str]
    datasets: list[str]
    defenses: list[str]
    attacks: list[str]
    seeds: list[int]
    train: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    attack_options: dict[str, int | None] = field(default_factory=lambda: {"steps": DEFAULT_STEPS})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def base(self, configuration: str, dataset: str) -> TrainConfig:
        """The training config of one configuration x data set (alpha, defenses, seed: per run)."""
        extra = CONFIGURATIONS[configuration](dataset, self.train.get("data_root"))
        return TrainConfig(**(self.train | {"dataset": dataset} | extra)).resolved()

    def settings(self) -> list[tuple[str, Setting]]:
        """Every defense (its text as given, its setting); ``none`` first, always present."""
        found = {"none": Setting()} | {d: parse_defense(d) for d in self.defenses}
        seen, out = set(), []
        for text, setting in found.items():
            if setting not in seen:
                seen.add(setting)
                out.append((text, setting))
        return out

    def check(self) -> None:
        """Names, seeds and options, in one line each, before anything runs."""
        from nopeek.attacks import ATTACKS, check_options

        for name in self.configurations:
            if name not in CONFIGURATIONS:
                raise ConfigError(
                    f"unknown configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}"
                )
        if not (self.configurations and self.datasets and self.attacks and self.seeds):
            raise ConfigError("a benchmark needs a configuration, a data set, an attack, a seed")
        for seed in self.seeds:
            check_seed(seed, what="--seeds")
        for spec in self.attacks:
            name, options = parse_attack(spec)
            check_options(ATTACKS.get(name), options, shared=ATTACK_OPTIONS)
        self.settings()


def attack_refusal(spec: str, base: TrainConfig) -> str | None:
    """Why attack ``spec`` cannot run on any run of ``base``, known before training."""
    from nopeek.attacks import ATTACKS
    from nopeek.eval._compat import check_attacks_fit

    name = parse_attack(spec)[0]
    why = ATTACKS.get(name).refusal(base)
    if why is not None:
        return why
    try:
        check_attacks_fit(base, [spec])
    except ConfigError as exc:
        return str(exc)
    return None


def defense_refusal(setting: Setting, base: TrainConfig, seeds: list[int]) -> str | None:
    """Why ``setting`` cannot be trained in ``base``'s configuration, known before training."""
    try:
        validate(SweepSpec(base, [setting], list(seeds), []))
    except NOT_APPLICABLE as exc:
        return str(exc)
    return None


@dataclass
class Group:
    """One configuration x data set: its sweep, the settings and attacks that apply to it, and
    why the others do not."""

    configuration: str
    dataset: str
    sweep: SweepSpec
    out: Path
    defenses: dict[str, Setting]  # defense text -> setting, those that apply
    refused_defenses: dict[str, str]
    attacks: list[str]  # attack specs that apply
    refused_attacks: dict[str, str]  # attack name -> why not


def plan(spec: BenchmarkSpec, out: Path) -> list[Group]:
    """Every configuration x data set with what applies to it (nothing is trained)."""
    groups = []
    for configuration in spec.configurations:
        for dataset in spec.datasets:
            base = spec.base(configuration, dataset)
            ok, refused = {}, {}
            for text, setting in spec.settings():
                why = defense_refusal(setting, base, spec.seeds)
                (refused.__setitem__(text, why) if why else ok.__setitem__(text, setting))
            attacks, no = [], {}
            for a in spec.attacks:
                why = attack_refusal(a, base)
                (no.__setitem__(parse_attack(a)[0], why) if why else attacks.append(a))
            sweep = SweepSpec(base, list(ok.values()), list(spec.seeds), [], {})
            where = out / "sweeps" / f"{configuration}-{dataset}"
            groups.append(Group(configuration, dataset, sweep, where, ok, refused, attacks, no))
    return groups


def _check_out(out: Path, spec: BenchmarkSpec, overwrite: bool) -> None:
    """``out`` is new, empty, or this benchmark's folder (same grid fields that fix numbers)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pick a folder for the benchmark")
    if not out.exists() or not any(out.iterdir()):
        return
    saved = out / SPEC
    if not saved.is_file():
        raise ConfigError(f"{out} holds other files; pick a new --out for the benchmark")
    old = json.loads(saved.read_text())
    same = {k: old.get(k) == v for k, v in spec.to_json().items()}
    if not overwrite and not (same["train"] and same["attack_options"]):
        raise ConfigError(
            f"benchmark {out} was made with other training or attack options; use another "
            "--out, the same options, or --overwrite"
        )


def run_benchmark(
    spec: BenchmarkSpec, out: str | Path, *, jobs: int = 1, overwrite: bool = False,
    quiet: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Train and attack the grid in ``out``; write the table files and return its cells."""
    from nopeek.eval.benchmark_table import collect, write_table

    out = Path(out)
    spec.check()
    _check_out(out, spec, overwrite)
    groups = plan(spec, out)
    trained = [(g.sweep, g.out) for g in groups if g.sweep.settings]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SPEC, spec.to_json())
    run_sweeps(trained, jobs=jobs, overwrite=overwrite, quiet=quiet)
    refusals = _read_refusals(out) if not overwrite else {}
    _attack_all(groups, spec, out, refusals, jobs)
    cells = collect(groups, spec, out, refusals)
    write_table(cells, out, spec)
    return cells


def _read_refusals(out: Path) -> dict[str, str]:
    path = out / REFUSALS
    return json.loads(path.read_text()) if path.is_file() else {}


def _tasks(groups: list[Group], spec: BenchmarkSpec, out: Path, refusals: dict[str, str]):
    """One task per (run, attack target) without a result or a recorded refusal."""
    from nopeek.eval._compat import attack_targets

    tasks = []
    for g in groups:
        for setting, seed in g.sweep.runs():
            path = run_dir(g.out, setting, seed)
            config = setting.config(g.sweep.base, seed=seed)
            for a in g.attacks:
                name, extra = parse_attack(a)
                budget = dict(spec.attack_options)
                budget |= {k: extra.pop(k) for k in ATTACK_OPTIONS if k in extra}
                for stem, party in attack_targets(config, name):
                    key = target_key(out, path, stem)
                    if key in refusals or (path / "attacks" / f"{stem}.json").is_file():
                        continue
                    tasks.append({"run": str(path), "name": name, "stem": stem, "party": party,
                                  "seed": seed, "options": extra, "budget": budget,
                                  "key": key})  # fmt: skip
    return tasks


def target_key(out: Path, path: Path, stem: str) -> str:
    """The key of one run's attack target in ``refusals.json``."""
    return f"{path.relative_to(out).as_posix()}/{stem}"


def attack_task(task: dict[str, Any]) -> tuple[str, str | None]:
    """Run one attack target (result written into its run); ``(key, why not)`` on a refusal."""
    from nopeek.attacks import run_attack
    from nopeek.defenses import run_sender

    torch.set_num_threads(1)
    try:
        run_attack(task["run"], task["name"], seed=task["seed"], party=task["party"],
                   options=task["options"] or None, sender=run_sender,
                   **task["budget"])  # fmt: skip
    except NOT_APPLICABLE as exc:
        return task["key"], str(exc)
    return task["key"], None


def _attack_all(groups, spec, out: Path, refusals: dict[str, str], jobs: int) -> None:
    tasks = _tasks(groups, spec, out, refusals)
    log.info("%d attack targets to run", len(tasks))
    if jobs == 1 or len(tasks) <= 1:
        done = map(attack_task, tasks)
        for key, why in done:
            _record(out, refusals, key, why)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context()) as pool:
        for key, why in pool.map(attack_task, tasks):
            _record(out, refusals, key, why)


def _record(out: Path, refusals: dict[str, str], key: str, why: str | None) -> None:
    if why is not None:
        refusals[key] = why
        atomic_write_json(out / REFUSALS, refusals)
