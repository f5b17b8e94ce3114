#!/usr/bin/env bash
# Installs every build and test dependency of dmsc from Debian's archive.
# Idempotent. --if-missing: do nothing (not even apt-get update) when every
# package is already there, which is what `make test` and `make demo` use.
set -euo pipefail

PACKAGES=(
	# build
	make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev libjson-c-dev
	# tests
	libcriterion-dev iproute2 curl procps psmisc jq iperf3 util-linux
	# sanitizers and fuzzing: libFuzzer and the ASan/UBSan runtimes come with
	# clang (libclang-rt-14-dev), valgrind for memcheck
	libclang-rt-14-dev valgrind
	# the fast path's tests and make bench (iperf3 is above)
	sockperf haproxy gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

if [[ ${1:-} == --if-missing && ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: installing ${missing[*]:-nothing} needs root; run it with sudo" >&2
	exit 1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: every package is installed"
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
