"""Run one fuzz target under atheris (libFuzzer): ``python fuzz/run.py TARGET [libFuzzer args]``.

    python fuzz/run.py http -max_total_time=600 /tmp/new-corpus fuzz/corpus/http

Targets are in ``fuzz/targets.py``. Every loaded Python module (ringkv, json, base64...) is
instrumented for coverage. A crash
(an input that breaks a target's property) is written as ``crash-<sha1>`` in the current
directory and the run exits non-zero; turn each into a regression test.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets

# Everything loaded by now (ringkv, and the standard library it decodes with) is instrumented.
atheris.instrument_all()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(targets.TARGETS)}}} [libFuzzer args]")
    target = targets.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
