"""Generated documentation: the settings table and the CLI reference, kept true by a test.

``python -m pq.cli.docs`` rewrites the marked blocks in README.md and docs/cli.md from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from pq.config import settings_table

__all__ = ["cli_reference", "render", "ROOT"]

ROOT = Path(__file__).resolve().parents[2]


def _walk(command: click.Command, path: list[str], ctx: click.Context | None):
    ctx = click.Context(command, info_name=" ".join(path), parent=None)
    yield path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            try:
                sub = command.get_command(ctx, name)
            except click.ClickException:  # a package not built yet; tests/test_cli.py insists on all
                continue
            if sub is not None and not sub.hidden:
                yield from _walk(sub, path + [name], ctx)


def cli_reference() -> str:
    from pq.cli import cli

    chunks = []
    for path, text in _walk(cli, ["pq"], None):
        chunks.append(f"### `{' '.join(path)}`\n\n```\n{text.rstrip()}\n```\n")
    return "\n".join(chunks)


def _replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"marker <!-- BEGIN {name} --> missing")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def render() -> dict[Path, str]:
    """The generated files' expected content."""
    readme = ROOT / "README.md"
    cli_md = ROOT / "docs" / "cli.md"
    from pq.cli import cli

    top_help = cli.get_help(click.Context(cli, info_name="pq"))
    out = {
        readme: _replace_block(
            _replace_block(readme.read_text(), "SETTINGS", settings_table()), "PQ_HELP", f"```\n{top_help}\n```"
        ),
        cli_md: "# CLI reference\n\nGenerated from the code by `python -m pq.cli.docs`; a test keeps it current.\n\n"
        + cli_reference(),
    }
    return out


if __name__ == "__main__":
    for path, content in render().items():
        path.write_text(content)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
