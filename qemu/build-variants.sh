#!/usr/bin/env bash
# Builds QEMU 7.2 (Debian 12's source package, Debian's own patches applied)
# once per locking variant of the model: the pristine tree for `qemu-9.1`
# (the unlocked read path), and the tree with qemu/patches/<variant>.patch
# for every other variant. Each binary is cached outside the repository under
# <cache>/bin/<variant>-<sha256 of the patch, 12 hex>/ next to a wrapper that
# adds Debian's firmware directories (-L), for VHOST_RACE_QEMU=<wrapper>.
#
# Usage: qemu/build-variants.sh [VARIANT...]     (default: every variant)
# Environment:
#   VHOST_RACE_QEMU_CACHE  cache directory (default /var/cache/vhost-race-qemu)
#   VHOST_RACE_QEMU_JOBS   ninja -j (default 2)
#
# What it leaves out: only the x86_64 system emulator is built (no tools, no
# docs, no GUI); firmware is Debian's installed iPXE and SeaBIOS, not built.
set -euo pipefail

die() {
    echo "build-variants: $*" >&2
    exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
patches="$here/patches"
cache="${VHOST_RACE_QEMU_CACHE:-/var/cache/vhost-race-qemu}"
jobs="${VHOST_RACE_QEMU_JOBS:-2}"

# The source this script and its patches are written against: QEMU 7.2 with
# Debian 12's stable updates (7.2.22 at deb12u18). Another version fails.
pin_re='^1:7\.2\+dfsg-7\+deb12u[0-9]+$'
upstream_dir="qemu-7.2.0"
# Debian's firmware directories (debian/rules' FIRMWAREPATH): SeaBIOS for
# bios-256k.bin, iPXE for efi-virtio.rom, qemu's own for the option ROMs.
firmware_dirs=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)
configure_args=(
    --prefix=/usr
    --firmwarepath="$(IFS=:; echo "${firmware_dirs[*]}")"
    --target-list=x86_64-softmmu
    --disable-docs --disable-werror --disable-gtk --disable-sdl --disable-vnc
    --disable-spice --disable-opengl --disable-virglrenderer --disable-xen
    --disable-capstone --enable-slirp --disable-install-blobs
)
build_deps=(ninja-build meson libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev
    flex bison pkg-config build-essential python3-venv dpkg-dev bzip2 xz-utils git)
src_list=/etc/apt/sources.list.d/vhost-race-src.sources

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) for: $*"
    fi
}

# --- the variants ------------------------------------------------------------
all_variants=(qemu-9.1)
for p in "$patches"/*.patch; do
    [ -e "$p" ] || continue
    [ "$(basename "$p")" != qemu-9.1.patch ] || die "$p: qemu-9.1 is the unpatched build"
    all_variants+=("$(basename "$p" .patch)")
done
if [ "$#" -gt 0 ]; then variants=("$@"); else variants=("${all_variants[@]}"); fi
for v in "${variants[@]}"; do
    [ "$v" = qemu-9.1 ] || [ -f "$patches/$v.patch" ] ||
        die "unknown variant '$v' (known: ${all_variants[*]})"
done

mkdir -p "$cache/src" "$cache/bin"
# One build at a time on this machine, whoever runs it.
exec 9>"$cache/.lock"
flock 9

# --- the source package --------------------------------------------------------
if [ ! -f "$src_list" ] && ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "[source] adding $src_list (deb-src, bookworm main)"
    as_root tee "$src_list" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -f "$cache/.apt-updated"
fi
if [ ! -f "$cache/.apt-updated" ] || [ -z "$(apt-cache showsrc qemu 2>/dev/null | sed -n 's/^Version: //p')" ]; then
    echo "[source] apt-get update"
    as_root apt-get update -qq
    touch "$cache/.apt-updated"
fi
missing=()
for d in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing+=("$d")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[source] installing build deps: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# apt-get source takes the highest version apt knows of.
version="$(apt-cache showsrc qemu | sed -n 's/^Version: //p' | sort -V | tail -n 1)"
[ -n "$version" ] || die "apt knows no source package for qemu (is the deb-src entry there?)"
[[ "$version" =~ $pin_re ]] ||
    die "apt serves qemu source $version, but the patches are written for 1:7.2+dfsg-7+deb12u* (QEMU 7.2)"
nover="${version#*:}"
dsc="$cache/src/qemu_${nover}.dsc"
if [ ! -f "$dsc" ]; then
    echo "[source] apt-get source --download-only qemu=$version"
    (cd "$cache/src" && apt-get source -qq --download-only "qemu=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    [ -f "$dsc" ] || die "apt-get source did not bring $dsc"
fi
echo "[source] qemu $version"

gitt() { git -c safe.directory="$tree" -C "$tree" "$@"; }

# --- the tree: unpacked once, Debian's patches, edk2 off, a git baseline -------
tree="$cache/tree/$upstream_dir"
if [ "$(cat "$cache/tree/.version" 2>/dev/null)" != "$version" ]; then
    echo "[source] unpacking into $cache/tree"
    rm -rf "$cache/tree"
    mkdir -p "$cache/tree"
    tar --no-same-owner -xf "$cache/src/qemu_${nover%-*}.orig.tar.xz" -C "$cache/tree"
    [ -d "$tree" ] || die "orig tarball has no $upstream_dir/"
    tar --no-same-owner -xf "$cache/src/qemu_${nover}.debian.tar.xz" -C "$tree"
    echo "[source] applying Debian's patches (debian/patches/series)"
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$tree/debian/patches/series" | while read -r p; do
        patch -d "$tree" -p1 --batch --quiet <"$tree/debian/patches/$p" >/dev/null ||
            die "Debian patch $p does not apply"
    done
    # The dfsg tarball has no edk2 images: never unpack them (Debian's
    # skip-meson-pc-bios.diff already skips pc-bios/, this covers the rest).
    sed -i 's/unpack_edk2_blobs = bzip2.found()/unpack_edk2_blobs = false/' "$tree/meson.build"
    grep -q 'unpack_edk2_blobs = bzip2.found()' "$tree/meson.build" &&
        die "could not turn edk2 unpacking off in meson.build"
    printf '/build/\n' >"$tree/.gitignore"
    gitt init -q
    gitt add -A
    gitt -c user.name=build-variants -c user.email=build-variants@localhost \
        commit -q -m "qemu $version with Debian's patches, edk2 unpacking off"
    echo "$version" >"$cache/tree/.version"
fi

reset_tree() {
    gitt checkout -q -- .
    gitt clean -fdq
}

conf_key="$(printf '%s\n' "${configure_args[@]}" | sha256sum | cut -c1-12)"
if [ "$(cat "$tree/build/.vhost-race-configured" 2>/dev/null)" != "$conf_key" ]; then
    reset_tree
    echo "[configure] ./configure ${configure_args[*]}"
    rm -rf "$tree/build"
    t0=$SECONDS
    (cd "$tree" && ./configure "${configure_args[@]}" >"$cache/configure.log" 2>&1) ||
        die "configure failed (see $cache/configure.log)"
    echo "$conf_key" >"$tree/build/.vhost-race-configured"
    echo "[configure] done ($((SECONDS - t0)) s)"
fi

# --- one binary per variant ------------------------------------------------------
declare -A result
for v in "${variants[@]}"; do
    patch_file="$patches/$v.patch"
    if [ "$v" = qemu-9.1 ]; then
        hash="$(printf '' | sha256sum | cut -c1-12)"
    else
        hash="$(sha256sum <"$patch_file" | cut -c1-12)"
    fi
    out="$cache/bin/$v-$hash"
    bin="$out/qemu-system-x86_64"
    wrapper="$out/qemu-system-x86_64-wrapped"
    if [ -x "$bin" ] && [ -x "$wrapper" ] && [ "$(cat "$out/SOURCE" 2>/dev/null)" = "$version" ]; then
        # The newest wrapper of a variant is the one the last run asked for
        # (vhost-race qemu-matrix --cache takes the newest per variant).
        touch "$wrapper"
        echo "[$v] cached at $wrapper"
        result[$v]="$wrapper"
        continue
    fi
    reset_tree
    if [ "$v" = qemu-9.1 ]; then
        echo "[$v] no patch (QEMU 7.2's unlocked read path)"
    else
        echo "[$v] applying patch $patch_file"
        patch -d "$tree" -p1 --batch --forward --quiet <"$patch_file" ||
            die "[$v] $patch_file does not apply to qemu $version"
    fi
    t0=$SECONDS
    ninja -C "$tree/build" -j "$jobs" qemu-system-x86_64 >"$cache/ninja-$v.log" 2>&1 ||
        die "[$v] ninja failed (see $cache/ninja-$v.log)"
    echo "[$v] ninja ($((SECONDS - t0)) s)"
    rm -rf "$out"
    mkdir -p "$out"
    cp "$tree/build/qemu-system-x86_64" "$bin"
    if [ "$v" != qemu-9.1 ]; then cp "$patch_file" "$out/$v.patch"; fi
    cat >"$wrapper" <<EOF
#!/bin/sh
# QEMU $version, variant $v (patch sha256 $hash), built by qemu/build-variants.sh;
# runs with Debian's firmware directories.
exec "\$(dirname "\$0")/qemu-system-x86_64" $(printf -- '-L %s ' "${firmware_dirs[@]}")"\$@"
EOF
    chmod +x "$wrapper"
    echo "$version" >"$out/SOURCE"
    echo "[$v] cached at $wrapper"
    result[$v]="$wrapper"
done
reset_tree

echo
printf '%-18s %s\n' variant "binary (VHOST_RACE_QEMU=...)"
for v in "${variants[@]}"; do
    printf '%-18s %s\n' "$v" "${result[$v]}"
done
