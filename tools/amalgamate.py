#!/usr/bin/env python3
"""Writes the amalgamation (`make amalgamation`), the library as two files a program vendors by
copying them, as sqlite is vendored:

  asyncdispatch.hpp   every public header (include/), with the headers of every backend
  asyncdispatch.cpp   every source (src/) and every backend's sources (platform/)

Each of the project's own quoted includes is inlined once, where it is first needed, after the
files it includes itself; system includes stay where they are. Each part opens with a
`// ---- <path> ----` line naming the file it came from. A part that only some backends use sits
inside the condition include/asyncdispatch/backend.hpp chooses them by, so the amalgamation
picks its backend from the target OS exactly as the tree does (and obeys the same
-DASYNCDISPATCH_BACKEND_<NAME> to force one). The emulators of tests/emu/ are never part of it.

A backend's files are read from backend.hpp itself: the headers its branch includes, and every
.cpp in the folders those headers live in. --expect checks that against the Makefile's list.
"""
import argparse
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UMBRELLA = "include/asyncdispatch.hpp"
BACKEND_HPP = "include/asyncdispatch/backend.hpp"
MACRO = "ASYNCDISPATCH_BACKEND_"

QUOTED = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\b")
OPENS = re.compile(r"^\s*#\s*if")  # #if, #ifdef, #ifndef
CLOSES = re.compile(r"^\s*#\s*endif\b")
BRANCH = re.compile(r"^#(?:el)?if defined\(" + MACRO + r"(\w+)\)\s*$")


def read(path):
    return (ROOT / path).read_text().splitlines()


def resolve(includer, name):
    """The repository path a quoted include names, relative to the including file."""
    path = (ROOT / includer).parent.joinpath(name).resolve().relative_to(ROOT).as_posix()
    if not (ROOT / path).is_file():
        sys.exit(f"amalgamate: {includer}: includes {name}, which is not in the tree")
    return path


class Source:
    """One file of the tree: its text without the lines the amalgamation replaces, and the
    project files it includes. backend.hpp also yields its ladder: each backend's includes."""

    def __init__(self, path):
        self.path = path
        lines = read(path)
        self.ladder = {}  # backend name -> the headers its branch of backend.hpp includes
        if path == BACKEND_HPP:
            start = next(i for i, line in enumerate(lines) if BRANCH.match(line))
            self.ladder = parse_ladder(path, lines[start:])
            lines = lines[:start]
        self.includes = []
        self.body = []
        depth = 0
        seen_code = False
        for number, line in enumerate(lines, 1):
            match = QUOTED.match(line)
            if match:
                # Inlining moves an include above the file that names it: that is only the same
                # program when the include is unconditional and comes before any declaration.
                if depth or seen_code:
                    sys.exit(f"amalgamate: {path}:{number}: a project include inside an #if or "
                             "after code cannot be inlined ahead of its file")
                self.includes.append(resolve(path, match.group(1)))
                continue
            if PRAGMA_ONCE.match(line):
                continue
            depth += 1 if OPENS.match(line) else -1 if CLOSES.match(line) else 0
            stripped = line.strip()
            if stripped and not stripped.startswith(("#", "//")):
                seen_code = True
            self.body.append(line)


def parse_ladder(path, lines):
    ladder = {}
    current = None
    for line in lines:
        match = BRANCH.match(line)
        if match:
            current = match.group(1)
            ladder[current] = []
        elif QUOTED.match(line) and current:
            ladder[current].append(resolve(path, QUOTED.match(line).group(1)))
        elif re.match(r"^#\s*(else|endif)", line):
            current = None
    if not ladder:
        sys.exit(f"amalgamate: {path}: no `#if defined({MACRO}...)` ladder found")
    return ladder


class Tree:
    """The tree as the amalgamation sees it: the backends backend.hpp's ladder names, each one's
    sources, and which backends use each file."""

    def __init__(self):
        self.files = {}
        backend = self.source(BACKEND_HPP)
        self.backends = list(backend.ladder)
        self.headers = [UMBRELLA] + sorted(
            p.relative_to(ROOT).as_posix() for p in (ROOT / "include/asyncdispatch").glob("*.hpp"))
        self.common = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "src").glob("*.cpp"))
        self.sources = {b: self.backend_sources(backend.ladder[b]) for b in self.backends}
        # Which backends use each file: those whose headers or sources reach it.
        self.users = {}
        for b in self.backends:
            for path in self.closure(self.headers + self.common + self.sources[b], b):
                self.users.setdefault(path, set()).add(b)

    def source(self, path):
        if path not in self.files:
            self.files[path] = Source(path)
        return self.files[path]

    def backend_sources(self, headers):
        folders = list(dict.fromkeys(str(Path(h).parent) for h in headers))
        paths = [p.relative_to(ROOT).as_posix()
                 for folder in folders for p in sorted((ROOT / folder).glob("*.cpp"))]
        assert not any(p.startswith("tests/") for p in paths), "the emulators stay out"
        return paths

    def deps(self, path, backend):
        source = self.source(path)
        return source.includes + source.ladder.get(backend, [])

    def postorder(self, roots):
        """Every file the roots reach, for any backend, each after the files it includes."""
        order, seen = [], set()

        def visit(path):
            if path not in seen:
                seen.add(path)
                for b in self.backends:
                    for dep in self.deps(path, b):
                        visit(dep)
                order.append(path)

        for path in roots:
            visit(path)
        return order

    def closure(self, roots, backend):
        seen = set()
        stack = list(roots)
        while stack:
            path = stack.pop()
            if path not in seen:
                seen.add(path)
                stack.extend(self.deps(path, backend))
        return seen


class Writer:
    """Emits parts in dependency order, each file once, grouping the consecutive parts that
    share a condition under one #if."""

    def __init__(self, tree):
        self.tree = tree
        self.done = set()

    def emit(self, roots):
        self.parts = []
        for path in roots:
            self.visit(path)
        return self.render()

    def visit(self, path):
        if path in self.done:
            return
        self.done.add(path)
        source = self.tree.source(path)
        for dep in source.includes:
            self.visit(dep)
        self.parts.append(path)
        # The ladder comes after backend.hpp's own text, which is what defines the macros the
        # backends' conditions test. Its includes go rank by rank (every backend's first, then
        # every backend's second), because a branch's order matters where a file is shared: the
        # posix dispatcher names the Selector that each branch's first include defines.
        branches = [source.ladder[b] for b in self.tree.backends if b in source.ladder]
        # What several backends share (the posix pieces) comes first, in one block, so that each
        # backend's own files then read as one run.
        for branch in branches:
            for header in branch:
                self.visit_shared(header)
        for rank in range(max(map(len, branches), default=0)):
            for branch in branches:
                if rank < len(branch):
                    self.visit(branch[rank])

    def visit_shared(self, path):
        """Visits the files below path that more than one backend uses."""
        for dep in self.tree.source(path).includes:
            if len(self.tree.users[dep]) > 1:
                self.visit(dep)
            else:
                self.visit_shared(dep)

    def condition(self, path):
        users = self.tree.users[path]
        if users == set(self.tree.backends):
            return None
        return [b for b in self.tree.backends if b in users]

    def render(self):
        out = []
        current = None
        for path in self.parts:
            cond = self.condition(path)
            if cond != current:
                if current:
                    out += [f"#endif // {' || '.join(current)}", ""]
                if cond:
                    tests = [f"defined({MACRO}{b})" for b in cond]
                    out.append("#if " + " || \\\n    ".join(tests))
                current = cond
            out.append(f"// ---- {path} ----")
            out += tidy(self.tree.source(path).body)
            out.append("")
        if current:
            out.append(f"#endif // {' || '.join(current)}")
        return out


def tidy(lines):
    """Drops the blank lines the removed includes leave: no run of two, none at either end."""
    out = []
    for line in lines:
        if line.strip() or (out and out[-1].strip()):
            out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return out


def preface(version, what, tree):
    names = ", ".join(b.lower() for b in tree.backends if b != "STUB")
    text = (
        f"asyncdispatch for C++ {version}, amalgamated: {what}. Generated by tools/amalgamate.py "
        "from the project's tree: change the tree, not this file. To vendor the library, copy "
        "asyncdispatch.hpp and asyncdispatch.cpp, compile the .cpp as C++20 with the program and "
        "link -pthread (Windows: -lws2_32 -lmswsock). Each part opens with a `// ---- <path> ----` "
        f"line naming its file in the tree. The backend ({names}) is chosen from the target OS as "
        f"include/asyncdispatch/backend.hpp chooses it, or by -D{MACRO}<NAME>=1 (the stub only "
        "so); each backend's parts sit inside an #if on its name.")
    return ["// " + line for line in textwrap.wrap(text, 97, break_on_hyphens=False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/dist", help="the folder to write the two files to")
    parser.add_argument("--expect", nargs="+", metavar=("BACKEND", "SOURCE"),
                        help="fail unless BACKEND's platform sources are exactly these")
    args = parser.parse_args()

    tree = Tree()
    if args.expect:
        name, expected = args.expect[0].upper(), set(args.expect[1:])
        derived = set(tree.sources.get(name, []))
        if derived != expected:
            sys.exit(f"amalgamate: backend {name}: backend.hpp gives {sorted(derived)}, the "
                     f"Makefile {sorted(expected)}")

    version = (ROOT / "VERSION").read_text().strip()
    writer = Writer(tree)
    header = writer.emit(tree.headers)
    # The family shared by several backends (platform/posix/) first, then each backend's own.
    platform = list(dict.fromkeys(p for b in tree.backends for p in tree.sources[b]))
    shared = [p for p in platform if len(tree.users[p]) > 1]
    roots = tree.common + shared + [p for p in platform if p not in shared]
    # The internal headers the sources include open the file, the most widely used first (a
    # file's includes are used at least as widely as it is, so this keeps them ahead of it).
    internal = [p for p in tree.postorder(roots) if p.endswith(".hpp") and p not in writer.done]
    internal.sort(key=lambda p: -len(tree.users[p]))
    sources = writer.emit(internal + roots)

    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    hpp = preface(version, "every public header", tree) + ["#pragma once", ""] + header
    cpp = preface(version, "every source and every backend", tree) + [
        "", '#include "asyncdispatch.hpp"', ""] + sources
    (out / "asyncdispatch.hpp").write_text("\n".join(hpp) + "\n")
    (out / "asyncdispatch.cpp").write_text("\n".join(cpp) + "\n")
    print(f"amalgamate: {args.out}/asyncdispatch.hpp ({len(hpp)} lines), "
          f"{args.out}/asyncdispatch.cpp ({len(cpp)} lines)")


if __name__ == "__main__":
    main()
