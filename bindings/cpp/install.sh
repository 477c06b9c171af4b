#!/usr/bin/env bash
# Installs ibex for C and C++ hosts: headers, the shared and static libraries, a CMake package
# config (find_package(ibex)) and pkg-config files (ibex.pc; ibex-static.pc links libibex.a).
#   bindings/cpp/install.sh PREFIX [LIBDIR]
# LIBDIR: where libibex.so / libibex.a are (default: target/release, after
# `cargo build --release`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
prefix="${1:?usage: install.sh PREFIX [LIBDIR]}"
libdir="${2:-$root/target/release}"
for f in libibex.so libibex.a; do
  [ -f "$libdir/$f" ] || { echo "install.sh: $libdir/$f not found (cargo build --release first)" >&2; exit 1; }
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
minor="$(echo "$version" | cut -d. -f2)"
mkdir -p "$prefix/include" "$prefix/lib/cmake/ibex" "$prefix/lib/pkgconfig"
prefix="$(cd "$prefix" && pwd)"
install -m 644 "$root/include/ibex.h" "$here/ibex.hpp" "$prefix/include/"
install -m 755 "$libdir/libibex.so" "$prefix/lib/"
install -m 644 "$libdir/libibex.a" "$prefix/lib/"
install -m 644 "$here/cmake/ibexConfig.cmake" "$prefix/lib/cmake/ibex/"
sed -e "s/@VERSION@/$version/" -e "s/@MINOR@/$minor/" "$here/cmake/ibexConfigVersion.cmake.in" \
  > "$prefix/lib/cmake/ibex/ibexConfigVersion.cmake"
for pc in ibex ibex-static; do
  sed -e "s|@PREFIX@|$prefix|" -e "s/@VERSION@/$version/" "$here/$pc.pc.in" > "$prefix/lib/pkgconfig/$pc.pc"
done
echo "ibex $version installed in $prefix"
