#!/usr/bin/python3
"""Checks that the programs shown in the docs are the tested files.

A page includes a file as a fenced code block between two markers:

    <!-- include: test/doc_examples/c_example.c -->
    ```c
    ...the file's exact content...
    ```
    <!-- end include -->

The path is relative to the source root. Every docs/*.md page is scanned;
the pages in REQUIRED must include the files listed for them. Exit status 0
if every block is byte-identical to its file, 1 otherwise (with a diff).

    check_docs.py [SOURCE_ROOT] [--update]

--update rewrites each block from its file instead of checking.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

REQUIRED = {
    "docs/c.md": ["test/doc_examples/c_example.c"],
    "docs/python.md": ["bindings/python/tests/test_doc_example.py"],
    "docs/rust.md": ["bindings/rust/kio/tests/doc_example.rs"],
}

BLOCK = re.compile(
    r"<!-- include: (?P<path>[^ ]+) -->\n"
    r"(?P<fence>```+)(?P<lang>[A-Za-z0-9_+-]*)\n"
    r"(?P<body>.*?)"
    r"(?P=fence)\n"
    r"<!-- end include -->",
    re.S,
)
MARKER = re.compile(r"<!-- (?:include: [^ ]+|end include) -->")


def check_page(root: Path, page: Path, update: bool) -> "tuple[list[str], list[str]]":
    """Returns (errors, included paths)."""
    text = page.read_text(encoding="utf-8")
    rel = page.relative_to(root).as_posix()
    errors: list[str] = []
    included: list[str] = []
    blocks = list(BLOCK.finditer(text))
    if len(MARKER.findall(text)) != 2 * len(blocks):
        errors.append(
            f"{rel}: an include marker is not followed by a fenced block and "
            "'<!-- end include -->'"
        )
    out, last = [], 0
    for m in blocks:
        path = m.group("path")
        included.append(path)
        src = root / path
        if not src.is_file():
            errors.append(f"{rel}: includes {path}, which does not exist")
            continue
        want = src.read_text(encoding="utf-8")
        if not want.endswith("\n"):
            want += "\n"
        got = m.group("body")
        if got != want:
            if update:
                out.append(text[last:m.start("body")])
                out.append(want)
                last = m.end("body")
                continue
            diff = difflib.unified_diff(
                got.splitlines(keepends=True),
                want.splitlines(keepends=True),
                f"{rel} (block)",
                path,
            )
            errors.append(f"{rel}: the block of {path} differs from the file:\n" + "".join(diff))
    if update and out:
        out.append(text[last:])
        page.write_text("".join(out), encoding="utf-8")
        print(f"updated {rel}")
    return errors, included


def main(argv: "list[str]") -> int:
    args = [a for a in argv[1:] if a != "--update"]
    update = "--update" in argv[1:]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    errors: list[str] = []
    seen: dict[str, list[str]] = {}
    pages = sorted((root / "docs").glob("*.md"))
    for page in pages:
        e, inc = check_page(root, page, update)
        errors += e
        seen[page.relative_to(root).as_posix()] = inc
    for page, files in REQUIRED.items():
        if page not in seen:
            errors.append(f"{page} does not exist")
            continue
        for f in files:
            if f not in seen[page]:
                errors.append(f"{page} does not include {f} (marker missing)")
    checked = sum(len(v) for v in seen.values())
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    print(f"{checked} included blocks match their files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
