"""The code's shape, checked rather than promised: no import cycles between the project's modules (lazy
imports inside functions count too), no private names imported across modules, and no top-level
function, class or constant that nothing uses."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wan_core", "components", "pipelines")


def modules() -> dict[str, Path]:
    """{dotted module name: file} for the three packages (tests excluded)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.startswith("test_"):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict) -> list[tuple[str, str]]:
    """(imported project module, imported name or "") for every import statement in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:  # `from pkg import module`
                    out.append((f"{node.module}.{a.name}", ""))
                elif node.module in known:
                    out.append((node.module, a.name))
    return out


def test_no_import_cycles_and_no_private_imports():
    known = modules()
    graph = {name: {m for m, _ in imports(path, known) if m != name} for name, path in known.items()}
    private = [f"{name} imports {m}.{n}" for name, path in known.items() for m, n in imports(path, known)
               if n.startswith("_") and not n.startswith("__") and m != name]
    assert not private, private
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    # a package's __init__ importing its own submodules lazily is how packages expose names; not a cycle
    cycles = [c for c in cycles if not (len(c) == 2 and c[1].startswith(c[0] + "."))]
    assert not cycles, cycles


def room(module: str) -> str:
    """The room a module lives in: a subpackage (wan_core.train, components.k8s, ...) or a module at the top of
    its package (wan_core.cli, pipelines.full)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_layers_no_arrow_back_up():
    """Rooms (subpackages and top-level modules) form layers: no two rooms import each other, even through
    others, and the three packages stack pipelines -> components -> wan_core, never the other way."""
    known = modules()
    rooms = {}
    for name, path in known.items():
        for m, _ in imports(path, known):
            if room(m) != room(name):
                rooms.setdefault(room(name), set()).add(room(m))
    order = {"wan_core": 0, "components": 1, "pipelines": 2}
    upward = sorted(f"{a} -> {b}" for a, targets in rooms.items() for b in targets
                    if order[b.split(".")[0]] > order[a.split(".")[0]])
    assert not upward, upward

    def reaches(start, goal, seen):
        for nxt in rooms.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # a package's __init__ (e.g. wan_core.model exposing WanDiT lazily) belongs to its room, so only rooms count
    back = sorted(f"{a} <-> {b}" for a, targets in rooms.items() for b in targets if reaches(b, a, set()))
    assert not back, back


def test_every_top_level_name_is_used():
    """Each top-level function, class and constant of the packages is named somewhere else in the
    project (its own module, another module, a test, a benchmark or pyproject.toml)."""
    known = modules()
    corpus = {p: p.read_text() for p in [*ROOT.glob("wan_core/**/*.py"), *ROOT.glob("components/**/*.py"),
                                          *ROOT.glob("pipelines/**/*.py"), *ROOT.glob("tests/**/*.py"),
                                          *ROOT.glob("benchmarks/*.py"), ROOT / "pyproject.toml", *ROOT.glob("images/*.sh")]}
    unused = []
    for name, path in known.items():
        tree = ast.parse(corpus[path])
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for n in names:
                if n.startswith("__"):
                    continue
                pattern = re.compile(rf"\b{re.escape(n)}\b")
                uses = sum(len(pattern.findall(text)) for text in corpus.values())
                if uses <= 1:  # only its definition
                    unused.append(f"{name}.{n}")
    assert not unused, unused


def test_help_imports_no_heavy_library():
    """`wan22 [COMMAND] --help` answers without importing torch, diffusers or kfp (they take seconds): each
    command imports what it needs when it runs. Measured: about 0.2 s per --help on the 2-core machine."""
    import subprocess
    import sys

    commands = ["", "sample", "train", "convert hf-to-mm", "consolidate", "export", "validate-dataset",
                "pipeline run", "pipeline compile", "k8s job", "k8s train-job"]
    probe = ("import sys\nfrom wan_core.cli import main\nfor argv in sys.argv[1:]:\n"
             "    try:\n        main((argv + ' --help').split())\n    except SystemExit:\n        pass\n"
             "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'kfp') if m in sys.modules)\n"
             "print('HEAVY', heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, *commands], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0 and "HEAVY []" in r.stderr, r.stderr[-2000:]
