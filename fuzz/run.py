"""Run one fuzz target under atheris (libFuzzer): ``python fuzz/run.py TARGET [libFuzzer args]``.

    python fuzz/run.py http -max_total_time=600 /tmp/new-corpus fuzz/corpus/http

Targets are in ``fuzz/targets.py``. ringkv and the pure-Python
decoders it uses are instrumented for coverage. A crash
(an input that breaks a target's property) is written as ``crash-<sha1>`` in the current
directory and the run exits non-zero; turn each into a regression test.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# ringkv (and the pure-Python decoders it relies on) is instrumented for coverage; asyncio and
# the rest of the standard library are not, which keeps start-up and each run fast.
with atheris.instrument_imports(include=["ringkv", "targets", "json", "base64", "urllib"]):
    import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(targets.TARGETS)}}} [libFuzzer args]")
    target = targets.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
