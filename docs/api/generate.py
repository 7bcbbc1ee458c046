"""Generates the API reference from the sources (`bash docs/api/build.sh` runs it):

  docs/api/C.md       include/performer.h: its numbered sections, every documented declaration
                      (the /** ... */ comment above it) and the functions' prototypes;
  docs/api/Python.md  the `performer` package: every public name's signature and docstring,
                      as pydoc reads them (performer.torch: docs/PYTORCH.md).

Usage: python docs/api/generate.py [--check]   (--check: exit 1 if a file would change)
Fails, and writes nothing, when a function of the header has no doc comment or a public Python
name has no docstring: an undocumented API is an error, not a warning."""

import inspect
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HEADER = os.path.join(REPO, "include", "performer.h")

SECTION = re.compile(r"/\* =+\n \* (\d+)\. (.*?)\n \* =+ \*/", re.S)
MACRO = re.compile(r"#define(?:\\\n|[^\n])*")  # with its backslash-continued lines
DOC = re.compile(r"/\*\*(.*?)\*/\s*\n", re.S)


def comment_text(raw):
    lines = [re.sub(r"^\s*\*(?: {1,2})?", "", line, count=1) for line in raw.strip().splitlines()]
    return "\n".join(line.rstrip() for line in lines).strip()


def declaration_after(text, start):
    """The declaration that starts at `start`: up to the first ';' at brace depth 0."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == ";" and depth == 0:
            return text[start:i + 1].strip()
    raise SystemExit("generate.py: unterminated declaration at offset %d of performer.h" % start)


def declarations_after(text, start):
    """The declarations one comment documents: the first, and those on the lines right after it
    (a group such as the projection getters), up to a blank line."""
    parts = []
    while True:
        declaration = declaration_after(text, start)
        parts.append(declaration)
        start = text.index(declaration, start) + len(declaration)
        following = text[start:start + 2]
        if not following.startswith("\n") or following == "\n\n" or text[start + 1:start + 3] in ("/*", "#"):
            return "\n".join(parts)
        start += 1


def c_reference():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    # A section comment: "N. Title" on its first line, then an optional introduction.
    sections = []
    for m in SECTION.finditer(text):
        lines = m.group(2).split("\n")
        title, count = lines[0], 1
        while title.count("(") > title.count(")") and count < len(lines):  # a title over two lines
            title, count = title + " " + lines[count].lstrip(" *"), count + 1
        intro = "\n".join(re.sub(r"^ \* ?", "", line) for line in lines[count:]).strip("\n")
        sections.append((m.start(), m.group(1), title.strip(), comment_text(intro)))
    out = ["# C API reference", "",
           "Generated from [include/performer.h](../../include/performer.h) by `bash docs/api/build.sh`;"
           " do not edit. The header is the contract: every function returns a status, writes nothing on"
           " error and leaves the message in `performer_last_error()`.", ""]
    out += ["- [%s. %s](#%s)" % (n, title, anchor(n + ". " + title)) for _, n, title, _ in sections]
    documented = set()
    section_index = -1
    for m in DOC.finditer(text):
        while section_index + 1 < len(sections) and sections[section_index + 1][0] < m.start():
            section_index += 1
            _, number, title, intro = sections[section_index]
            # Section introductions are laid out as plain text (formulas in columns): kept verbatim.
            out += ["", "## %s. %s" % (number, title)] + (["", "```text", intro, "```"] if intro else [])
        macro = MACRO.match(text, m.end())
        declaration = macro.group(0) if macro else declarations_after(text, m.end())
        names = re.findall(r"\b(performer_[a-z0-9_]+)\s*\(", declaration)
        documented.update(names)
        title = names[0] if names and not declaration.startswith("typedef") else declaration_name(declaration)
        out += ["", "### `%s`" % title, "", "```c", declaration, "```", "", comment_text(m.group(1))]
    functions = set(re.findall(r"^[a-z].*?\b(performer_[a-z0-9_]+)\s*\(", text, re.M))
    missing = sorted(functions - documented)
    if missing:
        raise SystemExit("generate.py: functions without a /** */ comment in performer.h: " + ", ".join(missing))
    return "\n".join(out) + "\n"


def declaration_name(declaration):
    m = (re.match(r"#define\s+(\w+)", declaration) or re.search(r"}\s*(\w+)\s*;$", declaration)
         or re.search(r"(\w+)\s*;$", declaration))
    return m.group(1) if m else declaration.split("\n")[0]


def anchor(title):
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def python_reference():
    import performer
    # performer.torch is left out: it imports torch, which not every environment has, and the
    # reference must not depend on the environment (docs/PYTORCH.md documents it).
    modules = [performer]
    out = ["# Python API reference", "",
           "Generated from the docstrings of the installed `performer` package (%s) by"
           " `bash docs/api/build.sh`; do not edit." % performer.__version__]
    undocumented = []
    for module in modules:
        out += ["", "## `%s`" % module.__name__, "", inspect.getdoc(module) or ""]
        for name in sorted(getattr(module, "__all__", [])):
            obj = getattr(module, name)
            if not (callable(obj) or inspect.ismodule(obj)):  # a constant: its value, no docstring
                out += ["", "### `%s = %r`" % (name, obj)]
                continue
            doc = inspect.getdoc(obj)
            if not doc:
                undocumented.append("%s.%s" % (module.__name__, name))
                continue
            out += ["", "### `%s%s`" % (name, signature(obj)), "", doc]
            if inspect.isclass(obj):
                for member, value in sorted(vars(obj).items()):
                    if member.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                        continue
                    member_doc = inspect.getdoc(value)
                    if not member_doc:
                        undocumented.append("%s.%s.%s" % (module.__name__, name, member))
                        continue
                    shown = member if isinstance(value, property) else member + signature(value)
                    out += ["", "#### `%s.%s`" % (name, shown), "", member_doc]
    if undocumented:
        raise SystemExit("generate.py: public names without a docstring: " + ", ".join(undocumented))
    return "\n".join(out) + "\n"


def signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def main():
    check = "--check" in sys.argv[1:]
    outputs = {os.path.join(HERE, "C.md"): c_reference(), os.path.join(HERE, "Python.md"): python_reference()}
    stale = []
    for path, text in outputs.items():
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            stale.append(os.path.relpath(path, REPO))
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if check and stale:
        raise SystemExit("generate.py: out of date (run bash docs/api/build.sh): " + ", ".join(stale))
    print("docs/api: %s" % ("up to date" if not stale else ("would change " if check else "wrote ") + ", ".join(stale)))


if __name__ == "__main__":
    main()
