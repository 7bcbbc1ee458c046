#!/usr/bin/env bash
# Builds the Swift API reference of PerformerCore with the toolchain's own DocC (no package
# dependency for users, no plugin); docs/api/build.sh runs it after the C and Python references.
#   1. swift build -c release --target PerformerCore   (nothing to do after the release build)
#   2. swift-symbolgraph-extract: the module's public symbols -> .build/docs/symbol-graphs
#   3. docs/api/swift_reference.py: fails on a public symbol without a /// comment, writes the
#      committed Markdown index docs/api/Swift.md (--check: fails if it would change instead)
#   4. docc convert of Sources/PerformerCore/PerformerCore.docc with --warnings-as-errors ->
#      .build/docs/PerformerCore, a static site (not committed; serve the folder with any web
#      server, e.g. python3 -m http.server -d .build/docs/PerformerCore, and open
#      /documentation/performercore)
# Usage: bash docs/api/build-swift.sh [--check]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
check=()
case "${1:-}" in
    "") ;;
    --check) check=(--check) ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

swift build -c release --target PerformerCore >&2
bin="$(swift build -c release --show-bin-path)"
triple="$(basename "$(dirname "$bin")")"
graphs="$repo/.build/docs/symbol-graphs"
site="$repo/.build/docs/PerformerCore"
rm -rf "$graphs" "$site"
mkdir -p "$graphs"
# PerformerCore imports the C module CPerformerSupport, and the kernel modules it imports import
# CPerformerKernelIntrinsics: SwiftPM's generated module maps name them.
swift-symbolgraph-extract -module-name PerformerCore -target "$triple" -I "$bin/Modules" \
    -Xcc -fmodule-map-file="$bin/CPerformerSupport.build/module.modulemap" \
    -Xcc -I -Xcc "$repo/Sources/CPerformerSupport/include" \
    -Xcc -fmodule-map-file="$bin/CPerformerKernelIntrinsics.build/module.modulemap" \
    -Xcc -I -Xcc "$repo/Sources/CPerformerKernelIntrinsics/include" \
    -minimum-access-level public -output-dir "$graphs"

python3 "$repo/docs/api/swift_reference.py" "$graphs" "${check[@]}"

# Any diagnostic (an unresolved symbol link in the catalog or a comment) fails the build.
docc convert "$repo/Sources/PerformerCore/PerformerCore.docc" \
    --additional-symbol-graph-dir "$graphs" --output-path "$site" \
    --fallback-display-name PerformerCore --fallback-bundle-identifier org.libperformer.PerformerCore \
    --warnings-as-errors >"$repo/.build/docs/docc.log" 2>&1 || { cat "$repo/.build/docs/docc.log" >&2; exit 1; }
if grep -qiE "warning|error" "$repo/.build/docs/docc.log"; then
    cat "$repo/.build/docs/docc.log" >&2
    echo "build-swift.sh: docc printed diagnostics" >&2
    exit 1
fi
echo "docs/api: DocC site in ${site#"$repo"/} (index: docs/api/Swift.md)"
