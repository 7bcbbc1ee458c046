"""The Markdown index of the Swift API (`bash docs/api/build-swift.sh` runs it):

  docs/api/Swift.md   every public symbol of PerformerCore, read from the symbol graph that
                      swift-symbolgraph-extract wrote: its declaration, its /// comment and the
                      source file it is in, one section per top-level type.

The full reference, with DocC's pages and the catalog's articles, is the static site the same
script builds with `docc convert` (not committed: it is generated, and large).

Usage: python docs/api/swift_reference.py SYMBOL_GRAPH_DIR [--check]   (--check: exit 1 if
Swift.md would change). Fails, and writes nothing, when a public symbol declared in
Sources/PerformerCore has no /// comment: an undocumented API is an error, as in generate.py."""

import glob
import json
import os
import re
import sys
from urllib.parse import unquote, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SOURCES = os.path.join(REPO, "Sources", "PerformerCore")
OUTPUT = os.path.join(HERE, "Swift.md")


def source_of(symbol):
    """The symbol's file relative to the repository, or None when it is not declared in
    PerformerCore's sources (members a conformance brings in from the standard library)."""
    location = symbol.get("location")
    if not location:
        return None
    path = os.path.realpath(unquote(urlparse(location["uri"]).path))
    if not path.startswith(os.path.realpath(SOURCES) + os.sep):
        return None
    return os.path.relpath(path, os.path.realpath(REPO)), location["position"]["line"] + 1


def load(directory):
    """Every symbol declared in PerformerCore's sources, once (the module's graph and the graphs
    of its extensions to other modules' types, e.g. PerformerCore@Swift)."""
    symbols = {}
    for path in sorted(glob.glob(os.path.join(directory, "PerformerCore*.symbols.json"))):
        with open(path, encoding="utf-8") as f:
            graph = json.load(f)
        for symbol in graph["symbols"]:
            precise = symbol["identifier"]["precise"]
            if "::SYNTHESIZED::" in precise or precise in symbols:
                continue
            where = source_of(symbol)
            if where is None:
                continue
            symbol["where"] = where
            symbols[precise] = symbol
    if not symbols:
        raise SystemExit("swift_reference.py: no PerformerCore symbols in %s" % directory)
    return list(symbols.values())


def declaration(symbol):
    return "".join(fragment["spelling"] for fragment in symbol.get("declarationFragments", []))


def doc(symbol):
    lines = symbol.get("docComment", {}).get("lines", [])
    return "\n".join(line["text"].rstrip() for line in lines).strip()


def anchor(title):
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def reference(symbols):
    undocumented = sorted("%s (%s:%d)" % ((".".join(s["pathComponents"]),) + s["where"])
                          for s in symbols if not doc(s))
    if undocumented:
        raise SystemExit("swift_reference.py: public symbols without a /// comment:\n  " + "\n  ".join(undocumented))
    # Top-level symbols, each followed by its members in source order (extensions of other
    # modules' types, such as Float, get a section of their own per extended type).
    groups = {}
    for symbol in symbols:
        groups.setdefault(symbol["pathComponents"][0], []).append(symbol)
    out = ["# Swift API reference (PerformerCore)", "",
           "Generated from the symbol graph of `PerformerCore` by `bash docs/api/build.sh` (docs/api/build-swift.sh);"
           " do not edit. An index: every public declaration with its comment. The full reference, with"
           " the overview articles of `Sources/PerformerCore/PerformerCore.docc`, is the DocC site the same"
           " command builds into `.build/docs/PerformerCore/` (open `index.html` through a local web server,"
           " e.g. `python3 -m http.server -d .build/docs/PerformerCore`, then `/documentation/performercore`).", ""]
    names = sorted(groups, key=str.lower)
    out += ["- [`%s`](#%s)" % (name, anchor(name)) for name in names]
    for name in names:
        members = sorted(groups[name], key=lambda s: (len(s["pathComponents"]) > 1, s["where"]))
        top = members[0] if len(members[0]["pathComponents"]) == 1 else None
        out += ["", "## %s" % name]
        if top:
            path, line = top["where"]
            out += ["", "```swift", declaration(top), "```", "", doc(top), "",
                    "[%s](../../%s)" % (path.replace("Sources/PerformerCore/", ""), path)]
        else:
            out += ["", "Extensions of `%s` declared in PerformerCore." % name]
        for member in members[1:] if top else members:
            title = ".".join(member["pathComponents"][1:]) or name
            out += ["", "### `%s`" % title, "", "```swift", declaration(member), "```", "", doc(member)]
    return "\n".join(out) + "\n"


def main():
    args = [a for a in sys.argv[1:] if a != "--check"]
    if len(args) != 1:
        raise SystemExit(__doc__)
    text = reference(load(args[0]))
    old = open(OUTPUT, encoding="utf-8").read() if os.path.exists(OUTPUT) else None
    if old == text:
        print("docs/api: Swift.md up to date")
    elif "--check" in sys.argv[1:]:
        raise SystemExit("swift_reference.py: docs/api/Swift.md is out of date (run bash docs/api/build.sh)")
    else:
        with open(OUTPUT, "w", encoding="utf-8") as f:
            f.write(text)
        print("docs/api: wrote Swift.md")


if __name__ == "__main__":
    main()
