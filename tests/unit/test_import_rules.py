"""The layers of src/swcmp, as rules on who may import what (every import statement,
also those inside functions, which is where swcmp imports lazily).

- ``swcmp.cmp`` (the CMP library) imports only its own modules and third-party ones;
- ``vici`` is imported only by ``swcmp.strongswan.vici``, and ``swcmp.strongswan``
  only by the CLI, which constructs the charon port (``ViciCharon``) and hands it to
  the renewal, the service, the CA's life and the start hook;
- ``pyasn1`` only by ``swcmp.cmp.codec`` and its schemas, ``swcmp.cmp.asn1``;
  ``pyasn1_alt_modules`` by nothing at run time (it costs a process several hundred
  milliseconds to import; the tests check swcmp's OIDs and schemas against it);
- the HTTP client stack (``http.client``, ``urllib.request``, ``requests``) only by
  ``swcmp.cmp.transport``;
- nothing below the CLI imports ``swcmp.cli``;
- no import cycles between modules, counting the imports under ``TYPE_CHECKING`` too
  (a cycle the type checker needs is still two modules that know each other): a
  helper two modules need lives below both.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import swcmp

SRC = Path(swcmp.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = ("swcmp", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = SRC) -> Iterator[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import under ``root``."""
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield module, alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the package
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                yield module, target, node.lineno
                for alias in node.names:  # `from swcmp import cli` imports swcmp.cli
                    if target.split(".")[0] == "swcmp":
                        yield module, f"{target}.{alias.name}", node.lineno


def import_edges(root: Path = SRC) -> dict[str, set[str]]:
    """module -> the swcmp modules it imports, at run time or under ``TYPE_CHECKING``
    (``from pkg import submodule`` counts as the submodule, not the package)."""
    modules = {_module_name(p, root) for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    per_statement: dict[tuple[str, int], set[str]] = {}
    for module, target, line in imports(root):
        per_statement.setdefault((module, line), set()).add(target)
    for (module, _line), targets in per_statement.items():
        hit = {t for t in targets if t in modules and t != module}
        # `from swcmp.cmp import certs` imports swcmp.cmp.certs, not the package's names
        subs = {t for t in hit if any(t.startswith(o + ".") for o in hit)}
        edges[module] |= subs or hit
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert cycles(import_edges()) == []


def test_an_import_for_the_type_checker_counts_for_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "swcmp"
    pkg.mkdir()
    (pkg / "a.py").write_text("from swcmp import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from swcmp.a import X\n")
    assert cycles(import_edges(pkg)) == [["swcmp.a", "swcmp.b"]]


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(found: Iterator[tuple[str, str, int]]) -> list[str]:
    bad = []
    for module, target, line in found:
        where = f"{module}:{line} imports {target}"
        if _in(module, "swcmp.cmp") and _in(target, "swcmp") and not _in(target, "swcmp.cmp"):
            bad.append(f"{where}: the CMP library imports only swcmp.cmp")
        if _in(target, "vici") and module != "swcmp.strongswan.vici":
            bad.append(f"{where}: only swcmp.strongswan.vici talks to vici")
        if (_in(target, "swcmp.strongswan") and not _in(module, "swcmp.strongswan")
                and not _in(module, "swcmp.cli")):
            bad.append(f"{where}: only the CLI constructs the charon port")
        if _in(target, "pyasn1") and module not in ("swcmp.cmp.codec", "swcmp.cmp.asn1"):
            bad.append(f"{where}: pyasn1 is the codec's alone")
        if _in(target, "pyasn1_alt_modules"):
            bad.append(f"{where}: pyasn1-alt-modules only in the tests")
        if (_in(target, "http.client", "urllib.request", "requests")
                and module != "swcmp.cmp.transport"):
            bad.append(f"{where}: HTTP only in swcmp.cmp.transport")
        if _in(target, "swcmp.cli") and not _in(module, "swcmp.cli", "swcmp.__main__"):
            bad.append(f"{where}: nothing below the CLI imports it")
    return bad


def test_the_source_tree_keeps_its_layers() -> None:
    found = list(imports())
    assert len(found) > 500  # the walk did see the tree
    assert violations(iter(found)) == []


@pytest.mark.parametrize("module, target, rule", [
    ("swcmp.cmp.client", "swcmp.session", "the CMP library imports only swcmp.cmp"),
    ("swcmp.session", "vici", "only swcmp.strongswan.vici talks to vici"),
    ("swcmp.renewal", "swcmp.strongswan.deployers", "only the CLI constructs the charon port"),
    ("swcmp.service.passes", "swcmp.strongswan", "only the CLI constructs the charon port"),
    ("swcmp.start_hook", "swcmp.strongswan.hook", "only the CLI constructs the charon port"),
    ("swcmp.cmp.protection", "pyasn1.codec.der", "pyasn1 is the codec's alone"),
    ("swcmp.cmp.codec", "pyasn1_alt_modules", "pyasn1-alt-modules only in the tests"),
    ("swcmp.enroll", "http.client", "HTTP only in swcmp.cmp.transport"),
    ("swcmp.checks", "swcmp.cli.render", "nothing below the CLI imports it"),
])
def test_each_rule_catches_a_breach(module: str, target: str, rule: str) -> None:
    assert any(rule in v for v in violations(iter([(module, target, 1)])))


def test_a_lazy_import_inside_a_function_is_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "swcmp" / "cmp"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from swcmp import fsutil\n")
    found = list(imports(tmp_path / "swcmp"))
    assert ("swcmp.cmp.x", "swcmp.fsutil", 2) in found
    assert violations(iter(found))


# --------------------------------------------------------------------------- key storage


def _asks_for_a_token(tree: ast.AST) -> list[int]:
    """Lines that ask whether a key is in a token: the helpers that answer it, a
    ``pkcs11:`` literal in code (docstrings aside), ``isinstance(x, ...PrivateKey)``."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    lines = []
    for node in ast.walk(tree):
        literal = (isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and "pkcs11:" in node.value.lower() and id(node) not in docstrings)
        if literal or _names_a_token_helper(node) or _is_instance_of_private_key(node):
            lines.append(node.lineno)
    return lines


def _names_a_token_helper(node: ast.AST) -> bool:
    name = (node.id if isinstance(node, ast.Name)
            else node.attr if isinstance(node, ast.Attribute) else None)
    return name in ("uses_token", "is_token_uri")


def _is_instance_of_private_key(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance" and len(node.args) == 2):
        return False
    kind = node.args[1]
    return (kind.attr if isinstance(kind, ast.Attribute)
            else kind.id if isinstance(kind, ast.Name) else None) == "PrivateKey"


def test_only_the_key_store_asks_whether_a_key_is_in_a_token() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path, SRC)
        if _in(module, "swcmp.keystore", "swcmp.strongswan.vici", "swcmp.cli.options"):
            continue  # vici: load-key or load-token; options: the --key help text
        found += [f"{module}:{n}" for n in _asks_for_a_token(ast.parse(path.read_text()))]
    assert found == []


def test_the_token_question_is_seen() -> None:
    code = ('def f(s, k):\n    "a pkcs11: docstring is fine"\n'
            '    return uses_token(s) or s.key.startswith("pkcs11:") '
            'or isinstance(k, keys.PrivateKey)\n')
    assert _asks_for_a_token(ast.parse(code)) == [3, 3, 3]


def test_no_function_in_the_renewal_is_longer_than_60_lines() -> None:
    tree = ast.parse((SRC / "renewal.py").read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.end_lineno
            and n.end_lineno - n.lineno + 1 > 60]
    assert long == []
