"""MkDocs hooks for the rtkit documentation (see mkdocs.yml).

- ``benchmarks.md`` is generated from ``benchmarks/RESULTS.md`` (the measured
  figures live beside the benchmark scripts), and links to
  ``../benchmarks/RESULTS.md`` in the pages point at it.
- ``cli-reference.md`` is generated from ``rtkit.cli.build_parser()``: the
  ``--help`` text of ``rtkit`` and of every subcommand, so the reference
  cannot drift from the command line.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _help_pages() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help text at $COLUMNS: make it reproducible
    from rtkit.cli import build_parser

    parser = build_parser()
    parts = [
        "# Command-line reference",
        "",
        "Generated from the argument parser (`rtkit.cli.build_parser`) when the documentation is built.",
        "The guide with exit codes and what each command writes is [The `rtkit` command](cli.md).",
        "",
        "## `rtkit`",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            parts += ["", f"## `rtkit {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def _benchmarks_page() -> str:
    text = RESULTS.read_text(encoding="utf-8")
    note = ("\n_This page is `benchmarks/RESULTS.md` of the repository; the scripts that produce it are in "
            "`benchmarks/`._\n")
    first, _, rest = text.partition("\n")
    return first + "\n" + note + rest


def on_files(files, config):  # noqa: ANN001 - MkDocs hook signature
    """Add the generated pages."""
    files.append(File.generated(config, "cli-reference.md", content=_help_pages()))
    if RESULTS.is_file():
        files.append(File.generated(config, "benchmarks.md", content=_benchmarks_page()))
    return files


_RESULTS_LINK = re.compile(r"\]\((?:\.\./)+benchmarks/RESULTS\.md")


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001 - MkDocs hook signature
    """Point links at ``benchmarks/RESULTS.md`` to the generated page."""
    depth = page.file.src_uri.count("/")
    return _RESULTS_LINK.sub("](" + "../" * depth + "benchmarks.md", markdown)
