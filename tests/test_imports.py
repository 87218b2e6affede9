"""The import rules of STYLE.md, checked by walking every module's imports with ast."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"devices", "geo", "ingest", "api", "simulators", "milepost"}
# package -> project packages it may import
ALLOWED = {
    "devices": set(),
    "geo": set(),
    "ingest": {"devices", "geo", "milepost"},   # milepost.settings / milepost.db: shared base
    # api: the OsmAnd route writes its dead letters with ingest's writer, its reports to the
    # fix_inbox that ingest reads (ingest.pipeline.INBOX_CHANNEL)
    "api": {"geo", "devices", "milepost", "ingest"},
    "simulators": {"devices"},
    "milepost": PROJECT,                        # the command line ties everything together
}
# milepost.settings and milepost.db must stay a leaf: the base that ingest and api share
LEAVES = {"milepost/settings.py", "milepost/db.py"}
THIRD_PARTY_ONLY = {"geo": {"numpy", "shapely"}}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_imports_go_one_way() -> None:
    bad = []
    for pkg, allowed in ALLOWED.items():
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            used = imports(path) & PROJECT - {pkg}
            if rel in LEAVES:
                used -= set()
                if used:
                    bad.append(f"{rel} imports {sorted(used)} but must import no project code")
            elif used - allowed:
                bad.append(f"{rel} imports {sorted(used - allowed)}")
    assert not bad, "\n".join(bad)


def test_aiomqtt_only_in_ingest_mqtt_and_simulators() -> None:
    users = {p.relative_to(ROOT).as_posix() for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")
             if "aiomqtt" in imports(p)}
    assert users <= {"ingest/mqtt.py", "simulators/live.py"}, users
