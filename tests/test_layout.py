"""The library's layout rules, read off the source (README, "Architecture"):

- imports flow one way, down the data flow: cli -> commands -> training / evaluation ->
  checkpoints -> models -> data -> settings -> paths / tf_exit (deferred imports inside
  functions count too);
- only symbol_tuning/settings.py reads or writes the environment;
- no module uses another project module's private (_underscore) names;
- modules stay under 600 lines.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "symbol_tuning"

# Rank of each top-level part: a module may import its own part or a lower rank. Parts of
# equal rank (training, evaluation) do not import each other.
RANKS = {"paths": 0, "tf_exit": 0, "__init__": 0, "settings": 1, "data": 2, "models": 3,
         "model": 3, "checkpoints": 4, "training": 5, "evaluation": 5, "commands": 6, "cli": 7}


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if "_data" not in p.parts)


def _part(module: str) -> str:
  """symbol_tuning.data.tasks -> data; symbol_tuning.cli -> cli."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  return ".".join(p for p in rel.parts if p != "__init__") if rel.name == "__init__" else \
      ".".join(rel.parts)


def _imports(tree: ast.AST, package: str):
  """(imported module, lineno) for every symbol_tuning import, `from X import m` giving X.m
  where m may be a module."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolve against the importing package
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      for alias in node.names:
        yield f"{base}.{alias.name}", node.lineno


def test_imports_flow_down_the_data_flow():
  wrong = []
  for path in _modules():
    name = _name(path)
    own = _part(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for imported, line in _imports(ast.parse(path.read_text()), package):
      if not imported.startswith("symbol_tuning.") or imported.count(".") < 1:
        continue
      other = _part(imported)
      if other not in RANKS:  # `from symbol_tuning import X` where X is a name, not a part
        continue
      if other != own and RANKS[other] >= RANKS[own]:
        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported} "
                     f"({own} may not import {other})")
  assert not wrong, "\n".join(wrong)


def test_only_settings_reads_the_environment():
  wrong = []
  for path in _modules():
    if path.name == "settings.py" and path.parent == PACKAGE:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id == "os" and node.attr in ("environ", "getenv", "putenv", "unsetenv")):
        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} os.{node.attr}")
  assert not wrong, "read the environment in symbol_tuning/settings.py:\n" + "\n".join(wrong)


def test_no_private_names_across_project_modules():
  wrong = []
  for path in _modules():
    tree = ast.parse(path.read_text())
    project_names = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("symbol_tuning"):
        for alias in node.names:
          if alias.name.startswith("_"):
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports "
                         f"{node.module}.{alias.name}")
          project_names.add(alias.asname or alias.name)
      elif isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.startswith("symbol_tuning") and alias.asname:
            project_names.add(alias.asname)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in project_names and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                     f"{node.value.id}.{node.attr}")
  assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("limit", [600])
def test_modules_stay_small(limit):
  long = {str(p.relative_to(PACKAGE.parent)): n for p in _modules()
          if (n := len(p.read_text().splitlines())) > limit}
  assert not long, f"modules over {limit} lines: {long}"
