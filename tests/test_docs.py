"""The documentation stays true to the code: links resolve and every flag shown exists.

Checked in ``README.md``, ``docs/*.md`` and the bundle's ``docs/README.md``:

* every relative Markdown link ``[text](path)`` or ``[text](path#anchor)`` names an existing file
  (``http(s)://`` and ``mailto:`` links and same-page ``#anchor`` links are not checked; anchors are
  not checked either, only the file);
* every ``--flag`` written after one of our commands (``litenext-*`` console scripts,
  ``scripts/*.py``, ``python -m litenext_monai.<module>``) in a fenced code block or in inline code is an option string of that command's
  argparse parser. The parser is the module's ``build_parser()`` where it has one, else the parser
  its ``main()`` builds, captured just before it parses anything.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def doc_files() -> list[Path]:
    """The Markdown files whose links and flags are checked."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files.append(ROOT / "bundles" / "litenext_seg" / "docs" / "README.md")
    return [f for f in files if f.is_file()]


# ---------------------------------------------------------------------------------------------- links

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    """Link targets of ``text`` outside code, without external (http, https, mailto) and ``#`` links."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    targets = []
    for match in _LINK.finditer(prose):
        target = match.group(1)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto: (any scheme), or an anchor of the same page
        targets.append(target)
    return targets


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of the Markdown file ``path`` that do not name an existing file or folder."""
    problems = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / file_part).exists():
            problems.append(f"{path.relative_to(root)}: link to missing file {target!r}")
    return problems


# ---------------------------------------------------------------------------------------------- flags

#: Console script -> module of its parser (candidates in order; the first that exists is used).
CONSOLE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "litenext-benchmark": ("litenext_monai.cli.benchmark",),
    "litenext-compare": ("litenext_monai.cli.compare",),
    "litenext-export": ("litenext_monai.cli.export",),
    "litenext-prepare": ("litenext_monai.cli.prepare",),
    "litenext-segment-volume": ("litenext_monai.cli.segment_volume",),
    "litenext-dicom-node": ("litenext_monai.dicom_node.cli", "scripts/dicom_node.py"),
}
#: Names that look like commands but are not (the project's own name).
NOT_COMMANDS = {"litenext-monai"}

_COMMAND = re.compile(
    r"(?<![\w./\"'-])(litenext-[a-z][a-z0-9-]*|scripts/\w+\.py)(?![\w.-])"
    r"|(?<=-m )(litenext_monai(?:\.\w+)+)(?![\w.-])"  # python -m litenext_monai.<module>
)
_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")
_COMMENT = re.compile(r"(^|\s)#\s.*$")


def code_texts(text: str) -> Iterator[str]:
    """Logical lines of fenced code blocks (``\\`` continuations joined) and inline code spans."""
    for block in _FENCE.finditer(text):
        body = block.group(0).split("\n")[1:-1]
        yield from re.sub(r"\\\n", " ", "\n".join(body)).split("\n")
    for span in _INLINE_CODE.finditer(_FENCE.sub("", text)):
        yield span.group(0).strip("`")


def command_flags(text: str) -> list[tuple[str, str]]:
    """``(command, flag)`` for every flag written after one of our commands in the code of ``text``.

    A command's flags run to the next command, shell separator (``|``, ``;``, ``&&``) or comment.
    """
    pairs = []
    for line in code_texts(text):
        line = _COMMENT.sub("", line)
        matches = [m for m in _COMMAND.finditer(line) if m.group(m.lastindex or 0) not in NOT_COMMANDS]
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
            segment = re.split(r"\|\||&&|;|(?<![\w\s])\|(?![\w\s])|\s\|\s", line[match.end() : end])[0]
            pairs.extend((match.group(match.lastindex or 0), flag) for flag in _FLAG.findall(segment))
    return pairs


def _load_script(relative: str) -> ModuleType:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # scripts run their main() only under __main__
    return module


def _module_for(command: str) -> ModuleType | None:
    """The module that defines ``command``'s parser; ``None`` when none of its candidates exists yet."""
    candidates = CONSOLE_SCRIPTS.get(command)
    if candidates is None:
        if command.startswith("scripts/"):
            candidates = (command,)
        elif command.startswith("litenext_monai."):
            if importlib.util.find_spec(command) is None:
                raise KeyError(f"python -m {command}: no such module")
            return importlib.import_module(command)
        else:
            raise KeyError(f"unknown command {command!r}: not a console script of this project")
    for candidate in candidates:
        if candidate.endswith(".py"):
            if (ROOT / candidate).is_file():
                return _load_script(candidate)
            continue
        if importlib.util.find_spec(candidate.rsplit(".", 1)[0]) is None:
            continue
        if importlib.util.find_spec(candidate) is not None:
            return importlib.import_module(candidate)
    if command.startswith("scripts/"):
        raise KeyError(f"{command} does not exist")
    return None


class _CapturedParser(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _capture_parser(main: Callable[..., object]) -> argparse.ArgumentParser:
    """The parser ``main`` builds: stop it at its first parse and keep the parser."""
    original = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        raise _CapturedParser(self)

    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        main([])
    except _CapturedParser as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise AssertionError(f"{main.__module__}.main() returned without parsing arguments")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its sub-commands."""
    options: set[str] = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= option_strings(sub)
    return options


_OPTIONS: dict[str, set[str] | None] = {}


def command_options(command: str) -> set[str] | None:
    """Option strings of ``command``; ``None`` when its module does not exist yet."""
    if command not in _OPTIONS:
        module = _module_for(command)
        if module is None:
            _OPTIONS[command] = None
        else:
            build = getattr(module, "build_parser", None)
            parser = build() if build is not None else _capture_parser(module.main)
            _OPTIONS[command] = option_strings(parser)
    return _OPTIONS[command]


def unknown_flags(text: str, source: str = "<text>") -> list[str]:
    """Problems with the flags of our commands shown in ``text``: unknown flags or commands."""
    problems = []
    for command, flag in command_flags(text):
        try:
            options = command_options(command)
        except KeyError as error:
            problems.append(f"{source}: {error.args[0]}")
            continue
        if options is not None and flag not in options:
            problems.append(f"{source}: {command} has no option {flag} (it has {sorted(options)})")
    return sorted(set(problems))


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_flags_exist(path: Path) -> None:
    assert unknown_flags(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


def test_docs_exist_and_readme_is_short() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for page in ("index", "getting-started", "training", "inference", "mlops", "hospital", "benchmarks",
                 "api", "development"):
        assert (ROOT / "docs" / f"{page}.md").is_file(), page


def test_checker_finds_a_made_up_flag() -> None:
    text = (
        "Export with `litenext-export model.pt out.onnx --format onnx --no-such-flag`.\n\n"
        "```bash\n"
        "python scripts/export.py model.pt out.ts \\\n"
        "    --overwrite --made-up 3   # --also-made-up in a comment is not checked\n"
        "litenext-prepare --list && litenext-export a.pt b.ts --trace\n"
        "```\n"
    )
    assert command_flags(text) == [
        ("scripts/export.py", "--overwrite"),
        ("scripts/export.py", "--made-up"),
        ("litenext-prepare", "--list"),
        ("litenext-export", "--trace"),
        ("litenext-export", "--format"),
        ("litenext-export", "--no-such-flag"),
    ]
    problems = unknown_flags(text)
    assert len(problems) == 2
    assert "litenext-export has no option --no-such-flag" in problems[0] + problems[1]
    assert "scripts/export.py has no option --made-up" in problems[0] + problems[1]


def test_checker_reads_parsers_without_build_parser() -> None:
    # cli/compare.py builds its parser inside main(): it is captured, not guessed from the help.
    options = command_options("litenext-compare")
    assert options is not None and {"--models", "--seeds", "--set"} <= options
    assert unknown_flags("`litenext-compare --models litenext --seed 1`") != []
    assert unknown_flags("`python scripts/no_such_script.py --x`") != []
    assert unknown_flags("`litenext-no-such-command --x`") != []
    assert unknown_flags("`pip install litenext-monai --no-deps`") == []
    assert unknown_flags("`python -m litenext_monai.data.synthetic out --num-train 4 --image-size 64`") == []
    assert unknown_flags("`python -m litenext_monai.data.synthetic out --num_train 4`") != []


def test_checker_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# index\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# readme\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](index.md) [ok](../README.md#quick-start) [web](https://example.org/x.md) [a](#top)\n"
        "[bad](no-such-page.md#x) `[not a link](in-code.md)`\n\n"
        "```\n[also code](code.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == ["docs/page.md: link to missing file 'no-such-page.md#x'"]
