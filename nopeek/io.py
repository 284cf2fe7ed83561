"""Output and loading helpers every package shares: atomic writes, safe loads, OS-error lines.

The public home of :mod:`nopeek._io` (its implementation): the attacks, evaluation and CLI
packages import these names from here, never from the core's private module.

>>> import tempfile, json, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.json"
>>> atomic_write_json(path, {"a": 1})
>>> json.loads(path.read_text())
{'a': 1}
"""

from nopeek._io import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    describe_os_error,
    output_error,
    safe_torch_load,
)

__all__ = [
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "describe_os_error",
    "output_error",
    "safe_torch_load",
]
