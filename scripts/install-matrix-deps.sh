#!/usr/bin/env bash
# Installs what the kernel matrix (`make test-kernels`) needs on Debian 12:
# qemu-system-x86, busybox-static, udev from bookworm, and virtme-ng, which
# only trixie packages. trixie is added as an apt source pinned at priority
# 50, so that nothing is ever taken from it unless asked for by name
# (`apt-get install virtme-ng/trixie`); never `-t trixie`, which would
# upgrade libc, systemd and apt. Idempotent. --if-missing: do nothing (not
# even apt-get update) when everything is there.
set -euo pipefail

BOOKWORM_PACKAGES=(qemu-system-x86 busybox-static udev kmod cpio zstd file)
TRIXIE_PACKAGE=virtme-ng
SOURCES=/etc/apt/sources.list.d/dmsc-trixie.sources
PIN=/etc/apt/preferences.d/dmsc-trixie

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${BOOKWORM_PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done
need_vng=0
installed "$TRIXIE_PACKAGE" || need_vng=1

if [[ ${#missing[@]} -eq 0 && $need_vng -eq 0 ]]; then
	[[ ${1:-} == --if-missing ]] || echo "install-matrix-deps: every package is installed"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "install-matrix-deps: installing ${missing[*]} ${TRIXIE_PACKAGE} needs root: run it as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive

if [[ $need_vng -eq 1 ]]; then
	if [[ ! -f $PIN ]]; then
		cat >"$PIN" <<PIN_EOF
# dmsc: trixie is there for virtme-ng only (scripts/install-matrix-deps.sh).
# Priority 50: never an upgrade, never a candidate unless named.
Package: *
Pin: release n=trixie
Pin-Priority: 50
PIN_EOF
	fi
	if [[ ! -f $SOURCES ]]; then
		cat >"$SOURCES" <<SRC_EOF
# dmsc: for virtme-ng only, see $PIN
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC_EOF
	fi
fi

echo "install-matrix-deps: installing ${missing[*]} $([[ $need_vng -eq 1 ]] && echo "$TRIXIE_PACKAGE/trixie")"
apt-get update -q
if [[ ${#missing[@]} -gt 0 ]]; then
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ $need_vng -eq 1 ]]; then
	# Show what would change first: a plan that upgrades anything essential
	# from trixie is refused rather than carried out.
	plan=$(apt-get install -s -q --no-install-recommends "$TRIXIE_PACKAGE/trixie")
	if grep -E '^Inst (libc6|libc-bin|systemd|apt|dpkg|libsystemd0|python3 |python3-minimal|libpython3)' <<<"$plan" |
		grep -q trixie; then
		echo "install-matrix-deps: installing $TRIXIE_PACKAGE/trixie would upgrade core packages; refusing:" >&2
		grep '^Inst' <<<"$plan" >&2
		exit 1
	fi
	apt-get install -y -q --no-install-recommends "$TRIXIE_PACKAGE/trixie"
fi
echo "install-matrix-deps: done"
