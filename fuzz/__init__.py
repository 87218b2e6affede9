"""Coverage-guided fuzzing (atheris + libFuzzer) of every decoder of untrusted bytes.

The contract under test: whatever bytes arrive, a decoder returns records or raises the
error it documents (``devices.errors.DecodeError``; ``ingest.manifest.ManifestError``
for the manifest; ``devices.epc.decode_epc`` raises nothing). Any other exception, an
input that runs longer than the per-input timeout, a crash or runaway memory is a
finding. The Hypothesis tests in ``tests/devices`` check the same contract on inputs
they generate; the fuzzer follows the decoders' own branches instead, and keeps what
it learns between runs.

``python -m fuzz --help`` for the command line. The modules:

* :mod:`fuzz.targets`: the harnesses and the table ``TARGETS``;
* :mod:`fuzz.corpus`: seeds from the real frames (``../shared``, the tests' frames);
* :mod:`fuzz.runner`: one target in its own process, and what libFuzzer reports;
* :mod:`fuzz.worker`: that process.
"""
