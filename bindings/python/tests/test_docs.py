"""Every file path the documentation names exists (Markdown links and `code` spans that look
like paths: a known file ending, or a top-level folder of the repository). Paths are resolved
from the document's folder, the repository root, or Sources/ (docs name modules as
PerformerCore/...)."""

import os
import re
import subprocess
import sys

from helpers import REPO

ENDINGS = (".swift", ".c", ".h", ".py", ".pyi", ".md", ".sh", ".png", ".toml", ".map", ".txt", ".cpp")
TOP_LEVEL = ("Sources/", "include/", "bindings/", "Tests/", "examples/", "benchmarks/", "docs/", ".ci/")
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
CODE = re.compile(r"`([A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.+\-]+)+/?)`")


def documents():
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") or d == ".ci"]
        for name in files:
            if name.endswith(".md"):
                yield os.path.join(folder, name)


def named_paths(text):
    for match in LINK.finditer(text):
        if not match.group(1).startswith(("http:", "https:", "mailto:")):
            yield match.group(1)
    for match in CODE.finditer(text):
        path = match.group(1)
        if path.endswith(ENDINGS) or path.startswith(TOP_LEVEL) or path.startswith(("PerformerCore/", "PerformerKernels/")):
            yield path


def test_every_path_named_in_the_docs_exists():
    missing = []
    for document in documents():
        with open(document, encoding="utf-8") as f:
            text = f.read()
        here = os.path.dirname(document)
        for path in named_paths(text):
            if "*" in path or "<" in path:
                continue
            roots = (here, REPO, os.path.join(REPO, "Sources"))
            if not any(os.path.exists(os.path.join(root, path)) for root in roots):
                missing.append("%s names %s" % (os.path.relpath(document, REPO), path))
    assert not missing, "\n".join(missing)


def test_generated_api_reference_is_current():
    """docs/api/C.md and Python.md equal what `bash docs/api/build.sh` makes from the header and
    the installed package's docstrings (it fails on an undocumented function or name)."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "docs", "api", "generate.py"), "--check"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
