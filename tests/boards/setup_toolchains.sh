#!/bin/sh
# Best-effort install of what the board tests (tests/boards) need: the Debian cross toolchains
# and qemu-user. Runs apt-get as root or through password-less sudo; anywhere else (or offline)
# it says what is missing and exits 0, and those tests skip naming the missing tool.
PACKAGES="gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
          gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user"
missing=""
for tool in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc riscv64-linux-gnu-gcc qemu-aarch64 \
            qemu-arm qemu-riscv64; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "board toolchains: no apt-get; missing:$missing (the board tests will skip)" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    run=""
elif sudo -n true 2>/dev/null; then
    run="sudo -n"
else
    echo "board toolchains: not root and no password-less sudo; missing:$missing" >&2
    exit 0
fi
echo "board toolchains: installing $PACKAGES" >&2
# bounded: an unreachable mirror must not stall the test run
install="timeout 600 $run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES"
if ! { $install >/dev/null 2>&1 \
       || { timeout 300 $run apt-get update -q >/dev/null 2>&1 && $install >/dev/null 2>&1; }; }; then
    echo "board toolchains: apt-get failed (the board tests will skip)" >&2
fi
exit 0
