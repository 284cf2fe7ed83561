"""Where an attack reads a run and writes its result: a run trained in one process, a
distributed run's folder, or one party's folder of it.

``nopeek party --out D`` writes ``D/<party>/`` on each party's host: the party's config, its
checkpoint of its own segments, and what it observed on its channels. The attacker is a party:

- ``--run D`` (every party's folder gathered in one place): the attack reads what *its
  attacker* observed and writes its result into that party's folder. A reconstruction attack
  is the receiver's (the server's view of the client's activations: ``D/server``); a label
  attack the party's that receives the gradients without holding the labels (``D/client``).
  Weights its threat model grants (white-box, queries) come from each party's own checkpoint.
- ``--run D/server`` (one party's folder, e.g. on the server's host): the attack runs as that
  party, from its folder alone. An attack that another party would run is refused naming the
  folder to pass; weights of another party come from its folder beside this one (``D/client``)
  if it is there, else the line says which folder to gather.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from nopeek.config import TrainConfig
from nopeek.errors import CheckpointError, ThreatModelError
from nopeek.rundir import RunDir, party_folders
from nopeek.topology import Topology
from nopeek.training.assemble import load_run_config


@dataclass(frozen=True)
class RunFolders:
    """The folders of the run at ``path``: ``parties`` (party -> its folder) for a distributed
    run, empty for a run trained in one process; ``own``: the party whose folder ``path`` is
    (``--run D/server``); ``home``: where the attacker's observations and results are."""

    path: Path
    parties: dict[str, Path]
    own: str | None = None
    home: Path | None = None

    @classmethod
    def find(cls, path: str | Path) -> RunFolders:
        """``path`` as passed: a distributed run's folder is recognised here, one party's
        folder only once the topology is known (:meth:`resolve`)."""
        path = Path(path)
        return cls(path, party_folders(path))

    def config(self) -> TrainConfig:
        """The run's config; the parties of a distributed run must have trained the same one
        (each party's own settings, such as its device, apart: see
        :func:`nopeek.training.assemble.load_run_config`). No checkpoint is needed: an attack
        on what was observed reads none."""
        return load_run_config(self.path, folders=self.parties, checkpoint=False)

    def resolve(self, topology: Topology, attacker: str) -> RunFolders:
        """With the run's topology and the attacking party: recognise one party's folder
        (``D/server``: its checkpoint holds that party's segments only) and find ``home``;
        refuse an attack that another party than the folder's would run, naming its folder."""
        folders, name = self, self.path.name
        if not self.parties and name in topology.parties and _holds_only(self.path, name):
            siblings = party_folders(self.path.parent)
            parties = {p: f for p, f in siblings.items() if p in topology.parties}
            folders = replace(self, parties=parties | {name: self.path}, own=name)
        if not folders.parties:
            return replace(folders, home=self.path)
        if folders.own is not None and attacker != folders.own:
            where = folders.parties.get(attacker, self.path.parent / attacker)
            raise ThreatModelError(
                f"{self.path} is {folders.own}'s folder of a distributed run, but this attack is "
                f"{attacker}'s (what it observes arrives at {attacker}); pass --run {where} "
                f"({attacker}'s folder) or --run {self.path.parent} with every party's folder"
            )
        return replace(folders, home=folders.folder_of(attacker))

    def folder_of(self, party: str) -> Path:
        """The folder holding ``party``'s checkpoint and observations."""
        if not self.parties:
            return self.path
        if party not in self.parties:
            where = self.path.parent if self.own is not None else self.path
            raise CheckpointError(
                f"the distributed run {where} has no folder for {party}, whose checkpoint or "
                f"observations this attack needs; gather {party}'s OUT/{party}/ folder into "
                f"{where} (beside {', '.join(self.parties)})"
            )
        return self.parties[party]


def _holds_only(path: Path, party: str) -> bool:
    """Whether the checkpoint in ``path`` holds ``party``'s segments and no other party's."""
    folder = RunDir(path, "run")
    if not folder.checkpoint_path.is_file():
        return False
    return set(folder.load_checkpoint()["parties"]) == {party}
