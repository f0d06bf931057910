#!/usr/bin/env bash
# Checks that a QEMU binary (e.g. a wrapper build-variants.sh wrote) runs the
# project's command line (reference/src/qemu.rs `net_args`, one queue pair)
# far enough for device start to send its IOTLB updates to the project's
# back-end: `-version` must print QEMU 7.2, and the back-end's trace must
# show two VHOST_USER_IOTLB_MSG requests received within 60 s; then QEMU is
# stopped with SIGTERM.
#
# Usage: qemu/smoke-boot.sh QEMU [VHOST_RACE]
#   QEMU        the binary or wrapper to check
#   VHOST_RACE  the vhost-race binary (default: target/release/vhost-race)
#
# What it leaves out: no guest OS, no migration; the back-end answers every
# request correctly (no fault injection).
set -euo pipefail

die() {
    echo "smoke-boot: $*" >&2
    exit 1
}

[ "$#" -ge 1 ] || die "usage: qemu/smoke-boot.sh QEMU [VHOST_RACE]"
qemu="$1"
vhost_race="${2:-target/release/vhost-race}"
[ -x "$qemu" ] || die "$qemu is not an executable"
[ -x "$vhost_race" ] || die "$vhost_race is not an executable (cargo build --release?)"

version="$("$qemu" -version | head -n 1)"
[[ "$version" == "QEMU emulator version 7.2"* ]] || die "$qemu -version: '$version', not QEMU 7.2"
echo "$version"

dir="$(mktemp -d)"
backend_pid=""
qemu_pid=""
cleanup() {
    [ -n "$qemu_pid" ] && kill -TERM "$qemu_pid" 2>/dev/null || true
    [ -n "$backend_pid" ] && kill -TERM "$backend_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$vhost_race" backend --socket "$dir/vu.sock" --trace "$dir/trace.jsonl" --once \
    >"$dir/backend.out" 2>&1 &
backend_pid=$!
for _ in $(seq 100); do [ -S "$dir/vu.sock" ] && break; sleep 0.1; done
[ -S "$dir/vu.sock" ] || die "the back-end did not listen: $(cat "$dir/backend.out")"

start=$SECONDS
"$qemu" -machine q35,accel=tcg,kernel-irqchip=split -m 128M \
    -object memory-backend-memfd,id=mem,size=128M,share=on -numa node,memdev=mem \
    -device intel-iommu,intremap=on,device-iotlb=on \
    -chardev socket,id=c0,path="$dir/vu.sock" -netdev type=vhost-user,id=n0,chardev=c0 \
    -device virtio-net-pci,netdev=n0,iommu_platform=on,ats=on,disable-legacy=on,romfile=efi-virtio.rom \
    -boot n -display none -monitor none -serial file:"$dir/serial.out" 2>"$dir/qemu.err" &
qemu_pid=$!

updates=0
while [ $((SECONDS - start)) -lt 60 ]; do
    updates="$(grep '"VHOST_USER_IOTLB_MSG"' "$dir/trace.jsonl" 2>/dev/null | grep -c '"received"' || true)"
    [ "$updates" -ge 2 ] && break
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.1
done
kill -TERM "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" || true
qemu_pid=""
wait "$backend_pid" || true
backend_pid=""

echo "IOTLB_MSG updates received: $updates (within $((SECONDS - start)) s)"
sed 's/^/qemu: /' "$dir/qemu.err"
sed 's/^/back-end: /' "$dir/backend.out"
[ "$updates" -ge 2 ] || die "device start did not send its two IOTLB updates"
echo "ok"
