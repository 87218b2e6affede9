"""Seed corpora and dictionaries for the fuzz targets, built from the real frames.

Nothing is copied here: the seeds are read, at each run, from the same files the unit
tests use:

* the captures in ``../shared/data/`` (the six gpsd NMEA logs, cut into runs of lines;
  the EPC test vectors);
* the worked frames of ``../shared/READERS.md`` (hex frames, NMEA sentences and JSON
  examples of each protocol's section) and the manifest example of ``DESIGN.md``;
* the literal frames and payloads of the decoder tests (``tests/devices/...``,
  ``tests/ingest/test_manifest.py``), read with :mod:`ast`, so a frame a test adds is a
  seed without anyone touching this module.

A target with modes gets every seed once per mode (the mode byte in front), except
where a seed fits one form only (OsmAnd query strings and JSON bodies).
"""

from __future__ import annotations

import ast
import hashlib
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from fuzz.targets import Target

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # beside the repository root, as the tests expect it
TESTS = ROOT / "tests"

NMEA_LINES_PER_SEED = 6

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_SPAN = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)
_NMEA = re.compile(r"[$!][A-Z0-9]{4,6},[^\s`*]*\*[0-9A-Fa-f]{2}")

# a seed for every mode (None) or for one mode
Seed = tuple[str | None, bytes]


def _read(path: Path) -> str:
    if not path.is_file():  # fail loudly, as the tests do, rather than fuzz without seeds
        raise FileNotFoundError(
            f"fuzz seeds: missing {path} (../shared must sit beside the repository root)"
        )
    return path.read_text(encoding="utf-8", errors="surrogateescape")


# ------------------------------------------------------------------ the sources


def _section(path: Path, heading: str) -> str:
    """The text of a Markdown section whose heading starts with ``heading``, up to the
    next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = _read(path).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise LookupError(f"fuzz seeds: no section {heading!r} in {path}")
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _spans(text: str) -> Iterator[str]:
    """Code blocks and inline code of a Markdown text."""
    for m in _SPAN.finditer(text):
        yield m[1] if m[1] is not None else m[2]


def readers_hex(heading: str) -> list[bytes]:
    """The hex frames (at least 4 bytes) written in a section of READERS.md."""
    out = []
    for span in _spans(_section(SHARED / "READERS.md", heading)):
        compact = "".join(span.split())
        if len(compact) >= 8 and _HEX.fullmatch(compact):
            out.append(bytes.fromhex(compact))
    return out


def readers_sentences(heading: str) -> list[bytes]:
    text = _section(SHARED / "READERS.md", heading)
    return [m[0].encode() + b"\r\n" for m in _NMEA.finditer(text)]


def markdown_json(path: Path, heading: str) -> list[bytes]:
    """The ```json blocks of a section (as written: some hold ``..`` placeholders)."""
    text = _section(path, heading)
    return [m[1].strip().encode() for m in re.finditer(r"```json\n(.*?)```", text, re.S)]


def nmea_captures() -> list[bytes]:
    """The gpsd captures, each cut into runs of lines (comments kept: real noise)."""
    logs = sorted((SHARED / "data" / "nmea").glob("*.log"))
    if len(logs) != 6:
        raise FileNotFoundError(f"fuzz seeds: expected 6 NMEA captures in {SHARED / 'data'}")
    out = []
    for log in logs:
        lines = log.read_bytes().splitlines(keepends=True)
        for i in range(0, len(lines), NMEA_LINES_PER_SEED):
            out.append(b"".join(lines[i : i + NMEA_LINES_PER_SEED]))
    return out


def epc_vectors() -> list[bytes]:
    rows = _read(SHARED / "data" / "epc" / "epc96_test_vectors.tsv").splitlines()
    return [r.split("\t")[0].encode() for r in rows if r.strip() and not r.startswith("#")]


_OPERATORS = {ast.Add: operator.add, ast.Mod: operator.mod}


class _Literals:
    """Evaluates the literal part of a test module: bytes and str constants, names bound to
    them at module level, ``H("..")``/``bytes.fromhex("..")``, ``.encode()``, ``+`` and
    ``%`` (``b'{"ts": "%s"}' % TS.encode()``). Anything else is not a frame."""

    def __init__(self, tree: ast.Module) -> None:
        self.names: dict[str, bytes | str] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], self.value(node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, self.value(node.value)
            else:
                continue
            if isinstance(target, ast.Name) and value is not None:
                self.names[target.id] = value

    def value(self, node: ast.expr) -> bytes | str | None:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, bytes | str) else None
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            right: object = self.value(node.right)
            if isinstance(node.right, ast.Tuple):  # b"..." % (a, b)
                right = tuple(self.value(e) for e in node.right.elts)
            try:
                result = _OPERATORS[type(node.op)](self.value(node.left), right)
            except (TypeError, ValueError):
                return None
            return result if isinstance(result, bytes | str) else None
        if isinstance(node, ast.Call) and not node.keywords:
            func, args = ast.unparse(node.func), [self.value(a) for a in node.args]
            if func.endswith(".encode") and not args:
                obj = self.value(node.func.value) if isinstance(node.func, ast.Attribute) else None
                return obj.encode() if isinstance(obj, str) else None
            if func in ("H", "bytes.fromhex", "bytearray.fromhex") and len(args) == 1:
                try:
                    return bytes.fromhex(args[0]) if isinstance(args[0], str) else None
                except ValueError:
                    return None
        return None


def literals_in_test(
    relpath: str, *, hex_text: bool = False, text: Callable[[str], bool] | None = None
) -> list[bytes]:
    """The frames written in a test module: every bytes value :class:`_Literals` can work
    out; ``hex_text``: str values that are hex, decoded; ``text``: str values it accepts,
    encoded."""
    tree = ast.parse(_read(TESTS / relpath))
    literals = _Literals(tree)
    out = []
    for node in ast.walk(tree):
        value = literals.value(node) if isinstance(node, ast.expr) else None
        if isinstance(value, bytes) and value:
            out.append(value)
        elif isinstance(value, str) and hex_text and len(value) >= 8 and _HEX.fullmatch(value):
            out.append(bytes.fromhex(value))
        elif isinstance(value, str) and text is not None and text(value):
            out.append(value.encode())
    return out


def dicts_in_test(relpath: str) -> list[bytes]:
    """Module-level dict literals of a test module, as JSON (the manifest tests' GOOD)."""
    out = []
    for node in ast.parse(_read(TESTS / relpath)).body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Dict):
            out.append(orjson.dumps(ast.literal_eval(value)))
    return out


# ------------------------------------------------------------------ per target


def _is_hex(s: str) -> bool:
    return len(s) >= 8 and bool(_HEX.fullmatch(s))


def _all(*groups: list[bytes]) -> list[Seed]:
    return [(None, s) for group in groups for s in group]


def _osmand() -> list[Seed]:
    """Query strings (the tests' request URIs) for the query modes, bodies for JSON."""
    uris = literals_in_test("devices/gps/test_osmand.py", text=lambda s: "id=" in s)
    bodies = literals_in_test("devices/gps/test_osmand.py")
    bodies += markdown_json(SHARED / "READERS.md", "### 5.3")
    seeds: list[Seed] = [(m, u.split(b"?", 1)[-1]) for u in uris for m in ("query", "query-local")]
    return seeds + [("json", b) for b in bodies]


SOURCES: dict[str, Callable[[], list[Seed]]] = {
    "gps-json": lambda: _all(literals_in_test("devices/gps/test_json.py")),
    "nmea": lambda: _all(
        nmea_captures(), readers_sentences("### 5.1"), literals_in_test("devices/gps/test_nmea.py")
    ),
    "owntracks": lambda: _all(
        markdown_json(SHARED / "READERS.md", "### 5.2"),
        literals_in_test("devices/gps/test_owntracks.py"),
    ),
    "osmand": _osmand,
    "teltonika": lambda: _all(
        readers_hex("### 5.4"), literals_in_test("devices/gps/test_teltonika.py", hex_text=True)
    ),
    "mercury": lambda: _all(
        readers_hex("### 1a."), literals_in_test("devices/rfid/test_mercury.py")
    ),
    "chafon": lambda: _all(readers_hex("### 1b."), literals_in_test("devices/rfid/test_chafon.py")),
    "ascii": lambda: _all(literals_in_test("devices/rfid/test_ascii.py")),
    "epc": lambda: _all(
        epc_vectors(),
        [h.hex().upper().encode() for h in readers_hex("## 2.")],
        literals_in_test("devices/test_epc.py", text=_is_hex),
    ),
    "fleet": lambda: _all(literals_in_test("devices/test_fleet.py")),
    "manifest": lambda: _all(
        markdown_json(SHARED / "DESIGN.md", "## The manifest"),
        dicts_in_test("ingest/test_manifest.py"),
        literals_in_test("ingest/test_manifest.py"),
    ),
}


def seeds(target: Target) -> list[bytes]:
    """The seed inputs of a target, mode byte included, without duplicates."""
    out: dict[bytes, None] = {}
    for mode, payload in SOURCES[target.name]():
        modes = target.modes if mode is None else (mode,)
        for m in modes or ("",):
            prefix = bytes([target.modes.index(m)]) if target.modes else b""
            out[prefix + payload[: target.max_len - len(prefix)]] = None
    return list(out)


def write_seeds(target: Target, folder: Path) -> int:
    """Write a target's seeds to ``folder`` (emptied first); returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    found = seeds(target)
    for s in found:
        (folder / hashlib.sha1(s).hexdigest()).write_bytes(s)
    return len(found)


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02X}" for b in token)


def write_dictionary(target: Target, path: Path) -> None:
    """The target's tokens in libFuzzer's dictionary format (``"..."`` with ``\\xNN``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'"{_escape(t)}"\n' for t in target.tokens))
