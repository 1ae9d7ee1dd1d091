"""The client knows nothing of the server's internals (design.md: kipuka.client | server internals)."""

import ast
from pathlib import Path

import kipuka.client

SERVER = ("kipuka.ra", "kipuka.store", "kipuka.est", "kipuka.ca", "kipuka.admin", "kipuka.server", "kipuka.config",
          "kipuka.cli", "kipuka.keydelivery", "kipuka.publish")
# The RFC 9908 template's ASN.1 classes live with the server's encoder; the client only reads them
# (pure pyasn1, no server state). Moving them to a shared package is for the lead to decide.
KNOWN = {("template.py", "kipuka.est")}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_client_module_imports_server_internals():
    root = Path(kipuka.client.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for name in _imports(path):
            for prefix in SERVER:
                if name == prefix or name.startswith(prefix + "."):
                    found.add((str(path.relative_to(root)), prefix))
    assert found <= KNOWN, sorted(found - KNOWN)
