#!/usr/bin/env bash
# Builds and runs Tests/swift-consumer, a package that depends on libperformer and calls
# PerformerCore, as another package would:
#   bash Tests/swift-consumer/run.sh             by version: the committed HEAD cloned into a
#                                                git repository tagged with the header's version,
#                                                taken as .package(url: "file://...", from:)
#   bash Tests/swift-consumer/run.sh --by-path   by path: the working tree as it is
#   --debug (with either)                        builds the consumer -c debug instead of release
# Either way SwiftPM builds the library again inside the consumer (a few minutes). By version
# is the case SwiftPM guards against unsafe flags; it passes because Package.swift declares
# tools version 6.2 (docs/INSTALL.md).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
mode=version configuration=release
for arg in "$@"; do
    case "$arg" in
        --by-path) mode=path ;;
        --debug) configuration=debug ;;
        *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
header="$repo/include/performer.h"
macro() { sed -nE "s/^#define[[:space:]]+$1[[:space:]]+([0-9]+)[[:space:]]*$/\1/p" "$header"; }
version="$(macro PERFORMER_VERSION_MAJOR).$(macro PERFORMER_VERSION_MINOR).$(macro PERFORMER_VERSION_PATCH)"

# The consumer is copied out, so its resolution files never land in the repository.
cp -R "$repo/Tests/swift-consumer" "$work/consumer"
rm -f "$work/consumer/Package.resolved"
if [ "$mode" = path ]; then
    ln -s "$repo" "$work/libperformer"
    export PERFORMER_PACKAGE_PATH="$work/libperformer"
    echo "== consumer of libperformer by path ($repo)"
else
    git clone -q "$repo" "$work/libperformer"
    git -C "$work/libperformer" tag -f "$version" >/dev/null
    export PERFORMER_PACKAGE_URL="file://$work/libperformer" PERFORMER_PACKAGE_VERSION="$version"
    echo "== consumer of libperformer by URL and version: $PERFORMER_PACKAGE_URL from: $version ($(git -C "$repo" rev-parse --short HEAD))"
fi
start=$(date +%s)
swift build -c "$configuration" --package-path "$work/consumer" --scratch-path "$work/build"
echo "== consumer built ($configuration) in $(( $(date +%s) - start )) s"
"$work/build/$configuration/PerformerConsumer"
