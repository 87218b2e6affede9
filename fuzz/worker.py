"""One target's fuzzing process: ``python -m fuzz.worker TARGET [libFuzzer flags] DIR...``.

:mod:`fuzz.runner` starts one of these per target, so a crash ends only its own target.
The project's decoder packages are instrumented for coverage as they are imported
(numpy, orjson, pydantic and shapely are not: their C code gives libFuzzer nothing to
follow, and the Python around the decoders would only dilute the signal). atheris's
regex and str hooks stay off: its pattern proxy drops the ``pos`` argument of
``Pattern.search``, which the ASCII framer passes.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["devices", "ingest"]):
        from fuzz.targets import TARGETS
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target.harness)
    atheris.Fuzz()  # exits the process: 0 at the end of the budget, non-zero on a finding


if __name__ == "__main__":
    main(sys.argv)
