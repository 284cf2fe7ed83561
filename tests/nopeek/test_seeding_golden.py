"""Every random stream gives the numbers it gave before the packages registered their own.

``streams_golden.json`` was computed when every stream still sat in one table in
``nopeek/seeding.py``: for each stream name and seeds 0 and 7, the entropy of the instance with
indices ``1, 2, ...`` (an int seed, or the first two words of a ``SeedSequence``), keyed
``"name|seed"``. Wherever a stream is registered now (the core, ``nopeek.attacks.streams``,
``nopeek.defenses.streams``, ``nopeek.eval.streams``), it must reproduce those numbers, and the
set of names must stay the same: a run of an earlier release, same seed, same numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nopeek.attacks
import nopeek.defenses
import nopeek.eval
from nopeek.seeding import STREAMS, Stream, _entropy, identity, register_stream, stream_seed

GOLDEN = json.loads((Path(__file__).parent / "streams_golden.json").read_text())
SEEDS = (0, 7)
PACKAGES = [  # a package's table of streams, and the prefix of their names
    (nopeek.attacks.streams.ATTACK_STREAMS, "attack."),
    (nopeek.defenses.streams.DEFENSE_STREAMS, "defense."),
    (nopeek.eval.streams.EVAL_STREAMS, "expertmatcher."),
]


def _value(seed: int, name: str) -> int | list[int]:
    """What the golden file holds for stream ``name`` at ``seed`` (the script that wrote it)."""
    index = tuple(range(1, len(STREAMS[name].index) + 1))
    entropy = _entropy(seed, name, index)
    if isinstance(entropy, np.random.SeedSequence):
        return [int(v) for v in entropy.generate_state(2)]
    return int(entropy)


def test_the_stream_names_are_the_golden_ones() -> None:
    assert sorted(STREAMS) == sorted({key.rpartition("|")[0] for key in GOLDEN})


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_stream_reproduces_its_golden_numbers(name: str) -> None:
    assert [_value(seed, name) for seed in SEEDS] == [GOLDEN[f"{name}|{s}"] for s in SEEDS]


def test_each_package_registers_its_own_streams_and_the_core_none_of_theirs() -> None:
    for table, prefix in PACKAGES:
        assert table and all(name.startswith(prefix) for name in table), prefix
        assert all(STREAMS[name] is stream for name, stream in table.items())
    code = "import json, nopeek.seeding as s; print(json.dumps(sorted(s.STREAMS)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    core = set(json.loads(out.stdout))
    theirs = {name for table, _ in PACKAGES for name in table}
    assert core & theirs == set()
    assert core | theirs == set(STREAMS)


def test_a_name_registered_twice_is_refused_unless_it_is_the_same_stream() -> None:
    known = STREAMS["attack.fsha.nets"]
    again = Stream(known.consumer, known.index, known.how, lambda seed: 0)
    assert register_stream("attack.fsha.nets", again) is known  # imported anew: no change
    assert stream_seed(3, "attack.fsha.nets") == 576160367
    with pytest.raises(KeyError, match=r"random stream 'attack\.fsha\.nets' registered twice"):
        register_stream("attack.fsha.nets", Stream("someone else", (), "the seed", identity))
    assert stream_seed(3, "attack.fsha.nets") == 576160367


def test_an_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(
        KeyError, match=r"unknown random stream 'attack\.fsh'.*register_stream"
    ) as e:
        stream_seed(0, "attack.fsh")
    assert "attack.fsha.nets" in str(e.value) and "data.test" in str(e.value)
