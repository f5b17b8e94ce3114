#!/usr/bin/env bash
# Installs every build and test dependency of dmsc from Debian's archive.
# Idempotent. --if-missing: do nothing (not even apt-get update) when every
# package is already there, which is what `make test` and `make demo` use.
# --bench: also what `make bench` compares against (HAProxy, nginx); their
# packages would start system services on :80, so they are installed with
# service starts disabled (policy-rc.d), and the benchmark runs its own
# instances in a network namespace. etcd-server likewise: its packaged
# service stays down (policy-rc.d) and is disabled; the tests start their own
# etcd on 127.0.0.1 with a private data directory; redis-server and
# postgresql the same (tests/kernel/test_apps.sh runs its own servers).
set -euo pipefail

PACKAGES=(
	# build
	make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev libjson-c-dev
	libhttp-parser-dev libcurl4-openssl-dev libnghttp2-dev
	# mutual TLS between hosts (user/mtls/): OpenSSL 3; openssl checks what dmscctl ca writes
	libssl-dev openssl
	# captures in tests/kernel/test_mtls.sh (no plaintext on the wire)
	tcpdump
	# tests
	libcriterion-dev iproute2 curl procps psmisc jq iperf3 util-linux wrk
	# the helper's system calls counted (tests/kernel/test_l7.sh)
	strace
	# sanitizers and fuzzing: libFuzzer and the ASan/UBSan runtimes come with
	# clang (libclang-rt-14-dev), valgrind for memcheck
	libclang-rt-14-dev valgrind
	# the fast path's tests and make bench (iperf3 is above)
	sockperf haproxy gnuplot-nox
	# policy carried by etcd (tests/kernel/test_etcd.sh; its TLS
	# certificates are made with the openssl CLI; scripts/bench-etcd.sh
	# is in Python)
	etcd-server etcd-client openssl python3
	# HTTP/2 through dmsc-l7 (tests/kernel/test_l7_h2.sh): h2load and nghttp,
	# nghttpd as the h2c backends (it installs no service)
	nghttp2-client nghttp2-server
	# gRPC through dmsc-l7 (tests/kernel/test_l7_grpc.sh)
	python3-grpcio
	# WebSocket through dmsc-l7 (tests/kernel/test_l7.sh, tests/tools/ws-peer.py)
	python3-websockets
	# real applications through dmsc (tests/kernel/test_apps.sh): Redis and
	# PostgreSQL servers with their own clients; their packaged services
	# stay down (policy-rc.d) and the suite runs its own in namespaces
	redis-server redis-tools postgresql postgresql-client
)
BENCH_PACKAGES=(haproxy nginx-light)

if_missing=false bench=false
for arg in "$@"; do
	case $arg in
	--if-missing) if_missing=true ;;
	--bench) bench=true ;;
	*) echo "usage: install-deps.sh [--if-missing] [--bench]" >&2; exit 2 ;;
	esac
done
$bench && PACKAGES+=("${BENCH_PACKAGES[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

if $if_missing && [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: installing ${missing[*]:-nothing} needs root: run it as root" >&2
	exit 1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: every package is installed"
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
policy_rc=
starts_service=$bench
for p in etcd-server redis-server postgresql; do
	[[ " ${missing[*]} " == *" $p "* ]] && starts_service=true
done
if $starts_service && [[ ! -e /usr/sbin/policy-rc.d ]]; then
	# 101: "action not allowed": the packages install, their services stay down
	policy_rc=/usr/sbin/policy-rc.d
	printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
	chmod 755 "$policy_rc"
	trap 'rm -f "$policy_rc"' EXIT
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
	for p in etcd-server:etcd redis-server:redis-server postgresql:postgresql; do
		[[ " ${missing[*]} " == *" ${p%%:*} "* ]] &&
			systemctl disable --now "${p#*:}.service" >/dev/null 2>&1
	done
fi
echo "install-deps: done"
