"""The reading side of :class:`~nopeek.rundir.RunDir`: one method per file of a finished folder.

Every file name lives here, as a constant on the class (``RunDir.CONFIG``, ...), and every read
that fails (a missing folder, an unreadable file, JSON that does not parse, the wrong contents,
a folder of another kind) is one :class:`~nopeek.errors.NopeekError` line naming the file and
the fix. The advice that ends a file's error is the folder's ``fix`` when one was given (a sweep
says how to redo one of its runs), else the file's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nopeek import schema as S
from nopeek.config import TrainConfig
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.observe import Observations
from nopeek.rundir import _markers
from nopeek.rundir import checkpoint as _checkpoint
from nopeek.rundir._markers import kind_of

if TYPE_CHECKING:
    from typing_extensions import Self

# what to do when a folder of this kind is missing (the ending of a one-line error)
_MISSING = {
    "run": "no run directory at {path}; train one first with `nopeek train`",
    "sweep": "no sweep at {path}; run `nopeek sweep --out {path}` first",
}
_RETRAIN = "train the run anew with --overwrite"


class Reading:
    """Reading the files of a nopeek folder (mixed into :class:`~nopeek.rundir.RunDir`).

    A run folder holds :attr:`CONFIG`, :attr:`METRICS`, :attr:`CHECKPOINT`,
    :attr:`OBSERVATIONS` and ``ATTACKS/<stem>.json``; a sweep folder :attr:`SWEEP`,
    :attr:`RESULTS` and one run folder per setting under :attr:`RUNS`.
    """

    CONFIG = _markers.CONFIG
    METRICS = "metrics.json"
    METRICS_CSV = "metrics.csv"  # one row per epoch, appended while the run trains
    CHECKPOINT = _markers.CHECKPOINT  # = nopeek.rundir.checkpoint.FILENAME
    OBSERVATIONS = "observations.pt"
    ATTACKS = "attacks"  # a folder: <stem>.json (and .png) per attack
    SWEEP = _markers.SWEEP
    RESULTS = "results.json"
    RUNS = "runs"  # a folder: one run folder per setting x seed

    path: Path
    kind: str
    fix: str | None

    if TYPE_CHECKING:  # RunDir's constructor, which open() calls

        def __init__(self, path: str | Path, kind: str, *, fix: str | None = None) -> None: ...

    @classmethod
    def open(cls, path: str | Path, kind: str = "run", *, fix: str | None = None) -> Self:
        """The existing ``kind`` folder at ``path``, to read; ``fix`` ends its files' errors.

        A missing folder, or a folder that nopeek marked as another kind (a sweep passed as a
        run), is one :class:`~nopeek.errors.ConfigError` line. A folder without a marker is
        read as it is (older nopeek versions wrote none): its files' errors speak for it.
        """
        folder = cls(path, kind, fix=fix)
        if not folder.path.is_dir():
            if fix:
                raise ConfigError(f"no {kind} folder at {folder.path}; {fix}")
            missing = _MISSING.get(kind, "no nopeek {kind} folder at {path}; check the path")
            raise ConfigError(missing.format(path=folder.path, kind=kind))
        found = kind_of(folder.path)
        if found is not None and found != kind:
            hint = f"pass {_markers.article(kind)} folder"
            if (found, kind) == ("sweep", "run"):
                hint = f"pass one of its runs ({folder.path / cls.RUNS}/<setting>-seed<k>)"
            raise ConfigError(
                f"{folder.path} is a nopeek {found} folder, not {_markers.article(kind)} folder; "
                f"{hint}"
            )
        return folder

    # ------------------------------------------------------------ what is there

    def has(self, name: str) -> bool:
        """Whether file ``name`` (e.g. ``RunDir.METRICS``) exists in the folder."""
        return (self.path / name).is_file()

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

    def attack_path(self, stem: str) -> Path:
        """``ATTACKS/<stem>.json``: the result of one attack (``white-box``, ``norm@client1``)."""
        return self.path / self.ATTACKS / f"{stem}.json"

    def has_attack(self, stem: str) -> bool:
        return self.attack_path(stem).is_file()

    # ------------------------------------------------------------ one reader per file

    def read_json(self, name: str | Path, *, fix: str | None = None) -> Any:
        """The parsed JSON of file ``name``, unchecked; unreadable or not JSON is one line."""
        path = self.path / name
        fix = self.fix or fix or f"is {self.path} a nopeek {self.kind} folder?"
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path} ({type(exc).__name__}); {fix}") from None

    def _json_object(self, name: str | Path, fix: str) -> dict[str, Any]:
        data = self.read_json(name, fix=fix)
        if not isinstance(data, dict):
            where, fix = self.path / name, self.fix or fix
            raise ConfigError(f"{where} must hold a JSON object, got {S.shown(data)}; {fix}")
        return data

    def config(self) -> TrainConfig:
        """The run's ``config.json`` as a :class:`~nopeek.config.TrainConfig`: each field's type
        checked and the whole validated (one line naming the file and the field)."""
        data = self.read_json(self.CONFIG, fix=f"is {self.path} a finished nopeek run?")
        fix = {"fix": self.fix} if self.fix else {}
        return TrainConfig.from_dict(data, where=str(self.path / self.CONFIG), **fix)

    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (a flat JSON object; its keys are in the README)."""
        return self._json_object(self.METRICS, _RETRAIN)

    def load_checkpoint(self) -> dict[str, Any]:
        """The run's ``checkpoint.pt``, loaded ``weights_only`` and every field checked."""
        return _checkpoint.read(self.checkpoint_path)

    def observations(self) -> Observations:
        """What an attacker could record during training (``observations.pt``), checked."""
        path = self.path / self.OBSERVATIONS
        if not path.is_file():
            raise ThreatModelError(
                f"{self.path} has no {self.OBSERVATIONS}; let its training finish first"
            )
        return Observations.load(path)

    def attack_result(self, stem: str) -> dict[str, Any]:
        """The JSON object of ``ATTACKS/<stem>.json`` (what ``nopeek attack`` wrote)."""
        fix = f"rerun the attack with `nopeek attack --run {self.path}`"
        return self._json_object(Path(self.ATTACKS) / f"{stem}.json", fix)

    def attack_results(self) -> dict[str, dict[str, Any]]:
        """Every attack result of the run, by stem (file name order); empty without any."""
        folder = self.path / self.ATTACKS
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return {p.stem: self.attack_result(p.stem) for p in paths}

    def sweep(self) -> dict[str, Any]:
        """The sweep's ``sweep.json``, parsed (the spec's fields are checked by
        :meth:`nopeek.eval.SweepSpec.from_json`)."""
        path = self.path / self.SWEEP
        try:
            spec: dict[str, Any] = json.loads(path.read_text())
            return spec
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{self.path} is not a finished sweep (cannot read {path}: "
                f"{type(exc).__name__}); run `nopeek sweep --out {self.path}` first (add "
                f"--overwrite if {path} is damaged)"
            ) from None

    def results(self) -> list[Any]:
        """The sweep's ``results.json``: a JSON list of rows (each checked by its reader,
        :func:`nopeek.eval.read_results`)."""
        path = self.path / self.RESULTS
        if not path.is_file():
            raise ConfigError(
                f"no results in {self.path}; run `nopeek sweep --out {self.path}` first"
            )
        fix = self.results_fix
        rows = self.read_json(self.RESULTS, fix=fix)
        if not isinstance(rows, list):
            raise ConfigError(f"{path} must hold a JSON list of rows, got {S.shown(rows)}; {fix}")
        return rows

    @property
    def results_fix(self) -> str:
        """How to repair a sweep's ``results.json`` (the ending of its readers' errors)."""
        return self.fix or f"rerun the same `nopeek sweep --out {self.path}` command to rewrite it"


def party_folders(path: str | Path) -> dict[str, Path]:
    """A distributed run's folders by party, or ``{}`` for any other folder.

    ``nopeek party --out D`` writes ``D/<party>/`` on each party's host, each a run folder of its
    own (its ``config.json``, its checkpoint of its own segments, what it observed); gathered in
    one place, ``D`` holds them all. ``D`` itself has no ``config.json``.
    """
    path = Path(path)
    if not path.is_dir() or (path / _markers.CONFIG).is_file():
        return {}
    found = sorted(d for d in path.iterdir() if d.is_dir() and (d / _markers.CONFIG).is_file())
    return {d.name: d for d in found}
