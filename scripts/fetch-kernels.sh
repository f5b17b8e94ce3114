#!/usr/bin/env bash
# Fetches the Debian kernel images of the matrix into a cache folder and
# unpacks them there (dpkg-deb -x): nothing is installed, /boot and
# /lib/modules of the host are never touched, and the host's apt sources are
# left alone (each suite gets a private apt configuration under the cache).
#
#   scripts/fetch-kernels.sh [NAME...]     NAME: 5.10, 6.1, 6.12 (default: all)
#
# Prints, per kernel, "NAME VERSION DIR" where DIR/boot/vmlinuz-VERSION is
# the image and DIR/lib/modules/VERSION its modules. A kernel already in the
# cache is not fetched again. The cache is $DMSC_KERNEL_CACHE, by default
# ${XDG_CACHE_HOME:-~/.cache}/dmsc-kernels.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/scripts/kernels.sh"
CACHE=$(dmsc_kernel_cache)

fetch_one() {
	local name=$1 suites=$2 apt dir deb pkg ver line
	apt=$CACHE/apt/$name
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
	: >"$apt/sources.list"
	for s in ${suites//,/ }; do
		if [[ $s == *-security ]]; then
			echo "deb http://deb.debian.org/debian-security $s main" >>"$apt/sources.list"
		else
			echo "deb http://deb.debian.org/debian $s main" >>"$apt/sources.list"
		fi
	done
	local -a aptopts=(
		-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
		-o "Dir::Etc::Preferences=/nonexistent" -o "Dir::Etc::PreferencesParts=/nonexistent"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
		-o "Dir::State::status=/dev/null" -o "APT::Architectures=amd64"
		-o "APT::Default-Release=" -o "Debug::NoLocking=1"
		-o "Acquire::Languages=none"
	)
	# Backports are NotAutomatic: pin every suite of this private config
	# alike so the newest kernel of the list is the candidate.
	printf 'Package: *\nPin: release a=*\nPin-Priority: 500\n' >"$apt/preferences"
	aptopts+=(-o "Dir::Etc::Preferences=$apt/preferences")
	apt-get "${aptopts[@]}" -q update >"$apt/update.log" 2>&1 || {
		echo "fetch-kernels: apt-get update for $name ($suites) failed:" >&2
		tail -n 5 "$apt/update.log" >&2
		return 1
	}
	# linux-image-amd64 is the meta package: its dependency names the image.
	pkg=$(apt-cache "${aptopts[@]}" depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\(-unsigned\)\?\)$/\1/p' | head -n 1)
	if [[ -z $pkg ]]; then
		echo "fetch-kernels: no linux-image-*-amd64 in $suites" >&2
		return 1
	fi
	ver=${pkg#linux-image-}
	ver=${ver%-unsigned}
	dir=$CACHE/$name
	if [[ -f $dir/boot/vmlinuz-$ver && -d $dir/lib/modules/$ver ]]; then
		echo "$name $ver $dir"
		return 0
	fi
	(cd "$apt/debs" && rm -f ./*.deb && apt-get "${aptopts[@]}" -q download "$pkg" >"$apt/download.log" 2>&1) || {
		echo "fetch-kernels: apt-get download $pkg failed:" >&2
		tail -n 5 "$apt/download.log" >&2
		return 1
	}
	deb=$(ls "$apt/debs"/*.deb)
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	dpkg-deb -x "$deb" "$dir.tmp"
	# Newer packages put modules under usr/lib (merged /usr); virtme-ng finds
	# them next to the image through DIR/lib/modules.
	if [[ ! -e $dir.tmp/lib/modules && -d $dir.tmp/usr/lib/modules ]]; then
		ln -s usr/lib "$dir.tmp/lib"
	fi
	if [[ ! -f $dir.tmp/boot/vmlinuz-$ver ]]; then
		echo "fetch-kernels: $deb has no boot/vmlinuz-$ver" >&2
		return 1
	fi
	# Debian's packages leave modules.dep to postinst (depmod): make it here.
	depmod -a -b "$dir.tmp" "$ver"
	rm -rf "$dir" "$apt/debs"/*.deb
	mv "$dir.tmp" "$dir"
	echo "$name $ver $dir"
}

names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=("${DMSC_KERNEL_NAMES[@]}")
rc=0
for n in "${names[@]}"; do
	suites=$(dmsc_kernel_suites "$n") || { rc=1; continue; }
	fetch_one "$n" "$suites" || rc=1
done
exit $rc
