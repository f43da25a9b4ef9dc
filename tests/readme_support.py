"""README.md's ```bash blocks, for the tests that run them as written.

Each block is followed by a line `<sub>Run ... by `FILE`[, `FILE`].</sub>` naming what runs it;
tests/test_readme.py checks that every block has one and that each named test file asks for
the block by section and index (`block("Training", 0)`). A test runs a block's commands with `run_cli`,
appending only its tiny settings, and with `replace` for the README's placeholder paths.
"""
import dataclasses
import pathlib
import re
import shlex

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(r"<sub>Run[^<]*?by (.+?)\.</sub>")


@dataclasses.dataclass(frozen=True)
class Block:
  section: str  # the `## ` heading it sits under
  index: int  # its position among that section's bash blocks
  text: str
  runners: tuple[str, ...]  # the files its marker names (empty: none)

  @property
  def commands(self) -> list[str]:
    """The block's commands, continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", self.text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def blocks() -> list[Block]:
  found, section, counts = [], None, {}
  lines = README.read_text(encoding="utf-8").splitlines()
  i = 0
  while i < len(lines):
    line = lines[i]
    if line.startswith("## "):
      section = line[3:].strip()
    if line.strip() == "```bash":
      end = lines.index("```", i + 1)
      following = next((l for l in lines[end + 1:] if l.strip()), "")
      marker = MARKER.search(following)
      runners = tuple(re.findall(r"`((?:tests|benchmarks)/[\w/.-]+\.(?:py|sh))`",
                                 marker.group(1))) if marker else ()
      index = counts.get(section, 0)
      counts[section] = index + 1
      found.append(Block(section, index, "\n".join(lines[i + 1:end]), runners))
      i = end
    i += 1
  return found


def block(section: str, index: int = 0) -> Block:
  """The `index`-th bash block under the `## section` heading."""
  matches = [b for b in blocks() if b.section == section and b.index == index]
  if not matches:
    raise LookupError(f"README.md has no bash block {index} under '## {section}'")
  return matches[0]


def cli_argv(command: str, replace: dict[str, str] | None = None) -> list[str]:
  """A README `symbol-tuning ...` command as cli.main's argv, placeholders replaced."""
  for old, new in (replace or {}).items():
    command = command.replace(old, new)
  argv = shlex.split(command, comments=True)
  if argv[0] != "symbol-tuning":
    raise ValueError(f"not a symbol-tuning command: {command}")
  return argv[1:]
