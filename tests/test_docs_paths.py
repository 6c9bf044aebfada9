"""Every repository path README.md and docs/*.md name exists (they follow the code's layout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ROOTS = (
    "broadcaster",
    "heads",
    "nonce",
    "signer_client",
    "enclave",
    "tests",
    "bench",
    "config",
    "docs",
)

# A path starts at a root (not inside a longer path or word: `/etc/broadcaster/...` is not ours).
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(ROOTS)})/[\w./{{}},*-]*)")
# A dotted module name (`broadcaster.api.client.BroadcasterClient`), not a file name.
MODULE = re.compile(r"(?<![\w./-])((?:broadcaster|heads)(?:\.[A-Za-z_]\w*)+)")
FILE_NAME = re.compile(r"\.(toml|jsonl|gz|json|ya?ml|md|py)$")  # `heads.jsonl.gz` is a file
# A row of the README's map: | `broadcaster/<package>/` | what lives there, `module.py`, `sub/` |
MAP_ROW = re.compile(r"^\| `(broadcaster/[\w/]*)` \|(.*)\|$", re.MULTILINE)
MAP_NAME = re.compile(r"`([\w/]+(?:\.py|/))`")
NOT_PATHS = {"heads/s"}  # the unit: heads per second
GENERATED = ("bench/out/",)  # written by `make bench` (git-ignored)


def mentions(text: str) -> list[str]:
    """The repository paths ``text`` names, ``{a,b}`` alternatives expanded."""
    found = []
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,:;")
        braces = re.search(r"\{([^{}]*)\}", path)
        if braces:
            found += [
                path[: braces.start()] + alt + path[braces.end() :]
                for alt in braces.group(1).split(",")
            ]
        else:
            found.append(path)
    return [p for p in found if p not in NOT_PATHS and not p.startswith(GENERATED)]


def exists(path: str) -> bool:
    """A file or directory, or a module named without ``.py`` (``heads/tracker``)."""
    if "*" in path:
        return any(REPO.glob(path))
    target = REPO / path.rstrip("/")
    return target.exists() or target.with_name(target.name + ".py").exists()


def module_exists(dotted: str) -> bool:
    """The first two parts name a real module or package; the rest may be attributes."""
    parts = dotted.split(".")
    base = REPO.joinpath(*parts[:2])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = sorted({p for p in mentions(text) if not exists(p)})
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"
    bad_modules = sorted(
        {m for m in MODULE.findall(text) if not FILE_NAME.search(m) and not module_exists(m)}
    )
    assert not bad_modules, f"{doc.name} names modules that do not exist: {bad_modules}"


def map_rows(text: str) -> dict[str, list[str]]:
    """The README map's ``broadcaster/`` rows: package -> the modules and folders it names."""
    return {m[1]: MAP_NAME.findall(m[2]) for m in MAP_ROW.finditer(text)}


def test_the_readme_maps_every_broadcaster_package_and_each_row_names_real_modules() -> None:
    rows = map_rows((REPO / "README.md").read_text())
    packages = {
        p.parent.relative_to(REPO).as_posix() + "/"
        for p in (REPO / "broadcaster").glob("*/__init__.py")
    }
    assert packages - set(rows) == set(), "packages missing from the README's map"
    for package, names in rows.items():
        missing = [n for n in names if not exists(package + n)]
        assert not missing, f"the {package} row names {missing}, not in {package}"


def test_the_check_sees_old_layout_paths_and_leaves_units_and_foreign_paths_alone() -> None:
    text = (
        "heads/subscriber --> broadcaster/txmanager; `broadcaster/fanout` and"
        " `broadcaster/rpc/transport/{base,http,wss}.py`; 146,030 heads/s;"
        " --config /etc/broadcaster/broadcaster.toml; `bench/out/results.json`;"
        " `broadcaster.txmanager.TxManager` and `broadcaster.api.client.BroadcasterClient`."
    )
    found = mentions(text)
    assert found == [
        "heads/subscriber",
        "broadcaster/txmanager",
        "broadcaster/fanout",
        "broadcaster/rpc/transport/base.py",
        "broadcaster/rpc/transport/http.py",
        "broadcaster/rpc/transport/wss.py",
    ]
    assert [p for p in found if not exists(p)] == [
        "broadcaster/txmanager",
        "broadcaster/fanout",
        "broadcaster/rpc/transport/wss.py",
    ]
    modules = MODULE.findall(text)
    assert [m for m in modules if not module_exists(m)] == ["broadcaster.txmanager.TxManager"]
    row = "| `broadcaster/tx/` | the tx manager: `manager.py`, `txcore.py` and `doctor/` |"
    assert {p: [n for n in names if not exists(p + n)] for p, names in map_rows(row).items()} == {
        "broadcaster/tx/": ["txcore.py", "doctor/"]
    }
