"""Build script of the `performer` Python package.

`pip install ./bindings/python` (from the repository root) does three things:
  1. builds libperformer.so with `swift build -c release` in the repository root, which is
     found from this file's own location (two directories up), so it works with pip's build
     isolation as long as pip builds in place (pip >= 21.3 does);
  2. compiles the C extension `performer._performer` against include/performer.h and links
     it to libperformer.so with the run-time search path $ORIGIN;
  3. copies libperformer.so next to the extension, stripped of its symbol table (16.2 MB ->
     7.9 MB; `strip` from binutils, skipped with a note when missing), so the installed
     package is self-contained.

The sdist (`bash bindings/python/build-wheel.sh --sdist`) carries the Swift package it builds
from in its `libperformer-src/` directory (Package.swift, Sources/, include/, LICENSE and the
package's other target directories), so `pip install libperformer-X.tar.gz` builds wherever
Swift is installed.

Environment variables:
  PERFORMER_REPO_ROOT  the libperformer repository (default: ./libperformer-src in an sdist,
                       else ../.. from this file); needed when building from a copied directory.
  PERFORMER_SWIFT      the swift executable (default: `swift` on PATH).
  PERFORMER_LIBRARY    a libperformer.so built already; skips the Swift build (the header
                       is still taken from the repository's include/).
"""

import os
import re
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
# Where an sdist keeps the Swift package (see SdistWithSwiftPackage).
EMBEDDED = "libperformer-src"
# What `swift build` needs from the repository: the manifest and every directory a target of
# Package.swift names (SwiftPM refuses a manifest whose target directories are missing).
SWIFT_PACKAGE_FILES = ["Package.swift", "LICENSE", "include", "Sources", "examples/swift",
                       "benchmarks/swift", "Tests/PerformerCoreTests"]


class PerformerBuildError(RuntimeError):
    pass


def repo_root():
    root = os.environ.get("PERFORMER_REPO_ROOT")
    if not root:
        embedded = os.path.join(HERE, EMBEDDED)
        root = embedded if os.path.isdir(embedded) else os.path.join(HERE, os.pardir, os.pardir)
    root = os.path.abspath(root)
    header = os.path.join(root, "include", "performer.h")
    if not os.path.isfile(header):
        raise PerformerBuildError(
            "libperformer: cannot find the repository (looked for %s). Build from a checkout "
            "(`pip install ./bindings/python` in the repository root), or set "
            "PERFORMER_REPO_ROOT to the repository." % header
        )
    return root


def header_version(root):
    with open(os.path.join(root, "include", "performer.h"), encoding="utf-8") as f:
        text = f.read()
    parts = []
    for name in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(r"^#define\s+PERFORMER_VERSION_%s\s+(\d+)\s*$" % name, text, re.M)
        if m is None:
            raise PerformerBuildError("libperformer: PERFORMER_VERSION_%s not found in performer.h" % name)
        parts.append(m.group(1))
    return ".".join(parts)


def build_libperformer(root, log):
    """Returns the path of libperformer.so, building it with SwiftPM unless
    PERFORMER_LIBRARY names one."""
    prebuilt = os.environ.get("PERFORMER_LIBRARY")
    if prebuilt:
        prebuilt = os.path.abspath(prebuilt)
        if not os.path.isfile(prebuilt):
            raise PerformerBuildError("libperformer: PERFORMER_LIBRARY=%s is not a file" % prebuilt)
        return prebuilt

    swift = os.environ.get("PERFORMER_SWIFT") or shutil.which("swift")
    if not swift or not (os.path.isfile(swift) or shutil.which(swift)):
        raise PerformerBuildError(
            "libperformer: the Swift toolchain was not found (no `swift` on PATH). Install Swift "
            "6.2 or later and make sure `swift` is on PATH, set PERFORMER_SWIFT to the swift "
            "executable, or set PERFORMER_LIBRARY to a libperformer.so built already."
        )
    command = [swift, "build", "-c", "release", "--product", "performer"]
    log("libperformer: running %s in %s" % (" ".join(command), root))
    result = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise PerformerBuildError(
            "libperformer: `%s` failed with exit status %d in %s:\n%s"
            % (" ".join(command), result.returncode, root, output[-8000:])
        )
    bin_path = subprocess.run(
        [swift, "build", "-c", "release", "--show-bin-path"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
    ).stdout.decode().strip()
    library = os.path.join(bin_path, "libperformer.so")
    if not os.path.isfile(library):
        raise PerformerBuildError("libperformer: swift build succeeded but %s does not exist" % library)
    return library


def strip_library(path, log):
    """Drops the symbol table and debug sections (the exported functions stay in .dynsym)."""
    strip = shutil.which("strip")
    if strip is None:
        log("libperformer: no `strip` on PATH; %s keeps its symbol table" % path)
        return
    subprocess.run([strip, "--strip-unneeded", path], check=True)


class BuildExtWithLibperformer(build_ext):
    """build_ext that first builds libperformer.so and then ships it beside the extension."""

    def run(self):
        root = repo_root()
        library = build_libperformer(root, self.announce_info)
        link_dir = os.path.join(os.path.abspath(self.build_temp), "libperformer")
        os.makedirs(link_dir, exist_ok=True)
        # Link against a private copy named exactly libperformer.so, so `-lperformer` cannot
        # pick up another installed copy and PERFORMER_LIBRARY may have any file name.
        linked = os.path.join(link_dir, "libperformer.so")
        shutil.copyfile(library, linked)
        strip_library(linked, self.announce_info)
        for ext in self.extensions:
            ext.include_dirs.append(os.path.join(root, "include"))
            ext.depends.append(os.path.join(root, "include", "performer.h"))
            ext.library_dirs.insert(0, link_dir)
        super().run()
        for ext in self.extensions:
            destination = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(destination, exist_ok=True)
            self.copy_file(linked, os.path.join(destination, "libperformer.so"))

    def announce_info(self, message):
        self.announce(message, level=2)


class SdistWithSwiftPackage(sdist):
    """sdist that also copies the Swift package into EMBEDDED, so the sdist builds alone."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = repo_root()
        for name in SWIFT_PACKAGE_FILES:
            source = os.path.join(root, name)
            target = os.path.join(base_dir, EMBEDDED, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.isdir(source):
                # symlinks=False: the per-ISA kernel directories (symlinks to PerformerKernels)
                # become real copies, which every tar and zip tool keeps.
                shutil.copytree(source, target, symlinks=False,
                                ignore=shutil.ignore_patterns("__pycache__", ".build"))
            else:
                shutil.copyfile(source, target)


# The stable ABI of CPython 3.9 (abi3): one wheel serves 3.9 and every later CPython. _buffer.c
# raises its own Py_LIMITED_API to 3.11 for the buffer protocol, used only on 3.11 and later.
LIMITED_API = ("Py_LIMITED_API", "0x03090000")
COMPILE_ARGS = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter"]

extension = Extension(
    "performer._performer",
    sources=["performer/_performer.c", "performer/_buffer.c", "performer/_numpy_fields.c",
             "performer/_output_pool.c"],
    depends=["performer/_arrays.h", "performer/_output_pool.h"],
    libraries=["performer"],
    define_macros=[LIMITED_API],
    py_limited_api=True,
    extra_compile_args=COMPILE_ARGS,
    # The installed extension finds libperformer.so in its own directory.
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

# libperformer's executor hook on an OpenMP runtime loaded in the process (performer.torch uses it
# with PyTorch's); needs no OpenMP at build time. Beside _performer, so both load one libperformer.so.
openmp_extension = Extension(
    "performer._openmp",
    sources=["performer/_openmp.c"],
    libraries=["performer"],
    define_macros=[LIMITED_API],
    py_limited_api=True,
    extra_compile_args=COMPILE_ARGS,
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

setup(
    version=header_version(repo_root()),
    ext_modules=[extension, openmp_extension],
    cmdclass={"build_ext": BuildExtWithLibperformer, "sdist": SdistWithSwiftPackage},
    # The wheel's tag: cp39-abi3 (the extensions are built with py_limited_api above).
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
