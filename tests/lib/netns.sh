# shellcheck shell=bash
# netns.sh: test hosts in network namespaces, and test cgroups, for the dmsc
# kernel tests and the demo. Source it; do not run it.
#
# Topology (all in namespaces; nothing is created in the caller's namespace):
#
#   ${P}hub   one namespace holding bridge br0 (no address). Every host's veth
#             peer is a port of br0, so all hosts share one L2 segment.
#   ${P}NAME  one namespace per host: lo up, eth0 (the other end of the veth,
#             named ${P}vN in the hub), the given addresses, and exactly one
#             route besides the connected ones: 198.18.0.0/16 dev eth0.
#
# Addresses: hosts take addresses in 198.18.0.0/16 only, with a prefix length
# of 16 to 32. Use /16 (e.g. 198.18.0.2/16, 198.18.1.2/16): any two hosts then
# reach each other directly by ARP over br0. A longer prefix works too, since
# the 198.18.0.0/16 route is on-link. 198.19.0.0/16 is left for VIPs and is
# routed nowhere, and there is no default route, so a connect() to a VIP that
# dmsc did not translate fails at once with ENETUNREACH instead of leaving the
# machine (docs/testing.md, "Tests and the network").
#
# Names: P is the prefix given to dmsc_net_init (e.g. "dmsct$$"), at most 12
# characters of [A-Za-z0-9_-] starting with a letter. Namespaces are "${P}hub" and "${P}NAME"; the only
# links with a global-looking name are the hub-side veth ends "${P}v1",
# "${P}v2"..., and they too live inside ${P}hub. Inside a host the link is eth0.
#
# Cgroups: dmsc_cgroup_make NAME makes <cgroup2 mount>/dmsc-test/NAME. Give NAME
# something unique too (e.g. "${P}client") when tests may run side by side.
#
# Bookkeeping is kept in a state directory (not in shell variables), so that
# functions called in a command substitution, e.g. cg=$(dmsc_cgroup_make c),
# are still cleaned up. One `trap dmsc_net_cleanup EXIT` removes everything.
#
# Every function returns 0 on success and non-zero with a message on stderr on
# failure; none relies on the caller's set -e, all are set -u safe.

DMSC_NET_PREFIX=${DMSC_NET_PREFIX-}
DMSC_NET_STATE=${DMSC_NET_STATE-}
DMSC_NET_KILL_WAIT_TENTHS=${DMSC_NET_KILL_WAIT_TENTHS-30} # bounded waits: 3 s
DMSC_NET_CG_BASE=dmsc-test

dmsc__err() {
	echo "netns.sh: $*" >&2
}

dmsc__need_init() {
	if [[ -z "${DMSC_NET_PREFIX}" || -z "${DMSC_NET_STATE}" || ! -d "${DMSC_NET_STATE}" ]]; then
		dmsc__err "${FUNCNAME[1]}: call dmsc_net_init PREFIX first"
		return 1
	fi
}

# dmsc__record FILE LINE: appends LINE to the state file once.
dmsc__record() {
	local file="${DMSC_NET_STATE}/$1"
	if [[ -f "$file" ]] && grep -qxF -- "$2" "$file"; then
		return 0
	fi
	printf '%s\n' "$2" >>"$file"
}

dmsc__ns_exists() {
	[[ -e "/run/netns/$1" ]]
}

# dmsc_net_init PREFIX
dmsc_net_init() {
	local prefix="${1-}"
	if [[ ! "$prefix" =~ ^[A-Za-z][A-Za-z0-9_-]{0,11}$ ]]; then
		dmsc__err "dmsc_net_init: prefix \"$prefix\": a letter, then up to 11 of [A-Za-z0-9_-]"
		return 1
	fi
	if [[ -n "${DMSC_NET_STATE}" && -d "${DMSC_NET_STATE}" ]]; then
		if [[ "$prefix" != "${DMSC_NET_PREFIX}" ]]; then
			dmsc__err "dmsc_net_init: already initialised with prefix ${DMSC_NET_PREFIX}"
			return 1
		fi
		return 0
	fi
	DMSC_NET_STATE=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-net.${prefix}.XXXXXX") || {
		dmsc__err "dmsc_net_init: cannot make a state directory"
		return 1
	}
	DMSC_NET_PREFIX=$prefix
	printf '%s\n' "$prefix" >"${DMSC_NET_STATE}/prefix"
	: >"${DMSC_NET_STATE}/netns"
	: >"${DMSC_NET_STATE}/cgroups"
	echo 0 >"${DMSC_NET_STATE}/links"
}

# dmsc__ns_up WHO NS: namespace NS made (recorded first, so a half-made one
# is cleaned up too) unless it exists, with lo up. WHO names the caller in
# errors.
dmsc__ns_up() {
	if ! dmsc__ns_exists "$2"; then
		dmsc__record netns "$2" || return 1
		ip netns add "$2" || {
			dmsc__err "$1: ip netns add $2 failed"
			return 1
		}
	fi
	ip -n "$2" link set lo up
}

# dmsc_net_hub: namespace ${P}hub with bridge br0 up. Once made, known
# from the state directory: no command runs again (a command costs seconds
# in a loaded TCG guest).
dmsc_net_hub() {
	dmsc__need_init || return 1
	local hub="${DMSC_NET_PREFIX}hub"
	[[ -f "${DMSC_NET_STATE}/hub" ]] && dmsc__ns_exists "$hub" && return 0
	dmsc__ns_up dmsc_net_hub "$hub" || return 1
	if ! ip -n "$hub" link show br0 >/dev/null 2>&1; then
		ip -n "$hub" link add br0 type bridge || {
			dmsc__err "dmsc_net_hub: cannot add bridge br0 in $hub"
			return 1
		}
	fi
	ip -n "$hub" link set br0 up || return 1
	: >"${DMSC_NET_STATE}/hub"
}

# dmsc__check_addr ADDR/PLEN: 198.18.0.0/16 only, prefix length 16..32.
dmsc__check_addr() {
	local a="$1" ip plen o
	if [[ ! "$a" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]]; then
		dmsc__err "address \"$a\": expected A.B.C.D/PLEN"
		return 1
	fi
	for o in 1 2 3 4; do
		if ((10#${BASH_REMATCH[o]} > 255)); then
			dmsc__err "address \"$a\": octet out of range"
			return 1
		fi
	done
	ip="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	plen=$((10#${BASH_REMATCH[5]}))
	if [[ "$ip" != "198.18" ]]; then
		dmsc__err "address \"$a\": test hosts use 198.18.0.0/16 only (198.19/16 is for VIPs)"
		return 1
	fi
	if ((plen < 16 || plen > 32)); then
		dmsc__err "address \"$a\": prefix length must be 16..32, so that 198.19/16 stays unrouted"
		return 1
	fi
}

# dmsc__no_default_route WHO NS [-6]: fails (naming WHO) if NS has a
# default route (an IPv6 one with -6).
dmsc__no_default_route() {
	[[ -z "$(ip -n "$2" ${3:+"$3"} route show default 2>/dev/null)" ]] && return 0
	dmsc__err "$1: $2 has a${3:+n IPv6} default route"
	return 1
}

# dmsc_net_host NAME ADDR/PLEN [ADDR/PLEN...]
dmsc_net_host() {
	dmsc__need_init || return 1
	local name="${1-}" hub="${DMSC_NET_PREFIX}hub" ns link n a fresh
	if [[ ! "$name" =~ ^[A-Za-z0-9_-]{1,32}$ || "$name" == hub ]]; then
		dmsc__err "dmsc_net_host: host name \"$name\": [A-Za-z0-9_-], not \"hub\""
		return 1
	fi
	shift
	if (($# == 0)); then
		dmsc__err "dmsc_net_host $name: at least one ADDR/PLEN"
		return 1
	fi
	for a in "$@"; do
		dmsc__check_addr "$a" || return 1
	done
	dmsc_net_hub || return 1
	ns="${DMSC_NET_PREFIX}${name}"
	# Each end is set up by one ip process (-batch): a command costs seconds
	# in a loaded TCG guest.
	fresh=0
	if ! dmsc__ns_exists "$ns"; then
		dmsc__record netns "$ns" || return 1
		ip netns add "$ns" || {
			dmsc__err "dmsc_net_host $name: ip netns add $ns failed"
			return 1
		}
		fresh=1
	fi
	if ((fresh)) || ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
		read -r n <"${DMSC_NET_STATE}/links" || return 1
		n=$((n + 1))
		echo "$n" >"${DMSC_NET_STATE}/links"
		link="${DMSC_NET_PREFIX}v${n}"
		if ((${#link} > 15)); then
			dmsc__err "dmsc_net_host $name: link name $link longer than 15: shorten the prefix"
			return 1
		fi
		# Both ends are made inside namespaces: nothing appears, even for a
		# moment, in the caller's namespace.
		printf '%s\n' "link add $link type veth peer name eth0 netns $ns" \
			"link set $link master br0" "link set $link up" | ip -n "$hub" -batch - || {
			dmsc__err "dmsc_net_host $name: cannot create veth $link/eth0 on br0"
			return 1
		}
	fi
	{
		echo "link set lo up"
		for a in "$@"; do
			echo "addr replace $a dev eth0"
		done
		echo "link set eth0 up"
		echo "route replace 198.18.0.0/16 dev eth0"
	} | ip -n "$ns" -batch - || {
		dmsc__err "dmsc_net_host $name: cannot set up eth0 ($*, the route 198.18.0.0/16)"
		return 1
	}
	# belt and braces: a default route must never exist in a test host
	dmsc__no_default_route "dmsc_net_host $name" "$ns"
}

# dmsc_net_addr6 NAME ADDR6/64: adds an IPv6 address from 2001:2::/48 to the
# host NAME (made by dmsc_net_host) without duplicate address detection, so
# it is usable at once. Its /64 is the only IPv6 route the host gets: a VIP
# outside it is unreachable (ENETUNREACH) unless dmsc translates it.
dmsc_net_addr6() {
	dmsc__need_init || return 1
	local name="${1-}" a="${2-}" ns="${DMSC_NET_PREFIX}${1-}"
	if [[ ! "$a" =~ ^2001:2:[0-9a-f:]*/64$ ]]; then
		dmsc__err "dmsc_net_addr6 $name: \"$a\": test hosts use 2001:2::/48 addresses, /64"
		return 1
	fi
	dmsc__ns_exists "$ns" || {
		dmsc__err "dmsc_net_addr6: no host $name (dmsc_net_host first)"
		return 1
	}
	ip -n "$ns" -6 addr replace "$a" dev eth0 nodad || {
		dmsc__err "dmsc_net_addr6 $name: cannot add $a"
		return 1
	}
	dmsc__no_default_route "dmsc_net_addr6 $name" "$ns" -6
}

# dmsc_net_hosts NAME=ADDR/PLEN...: dmsc_net_host for each, in order.
dmsc_net_hosts() {
	local h
	for h in "$@"; do
		dmsc_net_host "${h%%=*}" "${h#*=}" || return 1
	done
}

# dmsc_net_link NAME: prints the name of host NAME's veth end in the hub
# (${P}vN), where a capture sees all of that host's traffic over br0.
dmsc_net_link() {
	dmsc__need_init || return 1
	local ns="${DMSC_NET_PREFIX}${1-}" peer link
	if [[ -z "${1-}" || "$1" == hub ]] || ! dmsc__ns_exists "$ns"; then
		dmsc__err "dmsc_net_link: no host \"${1-}\""
		return 1
	fi
	# eth0@ifN: N is the index of the other end, in the hub
	peer=$(ip -n "$ns" -o link show eth0 | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p')
	link=$(ip -n "${DMSC_NET_PREFIX}hub" -o link show | sed -n "s/^$peer: \([^@:]*\)[@:].*/\1/p")
	if [[ -z "$peer" || -z "$link" ]]; then
		dmsc__err "dmsc_net_link $1: no veth end in ${DMSC_NET_PREFIX}hub for eth0 of $ns"
		return 1
	fi
	echo "$link"
}

# dmsc_net_exec NAME cmd...: runs cmd in host NAME (or "hub").
dmsc_net_exec() {
	dmsc__need_init || return 1
	local ns="${DMSC_NET_PREFIX}${1-}"
	if [[ -z "${1-}" ]] || ! dmsc__ns_exists "$ns"; then
		dmsc__err "dmsc_net_exec: no host \"${1-}\""
		return 1
	fi
	shift
	ip netns exec "$ns" "$@"
}

# dmsc__kill_pids pid...: TERM, a bounded wait, then KILL.
dmsc__kill_pids() {
	local pid left i
	local -a pids=()
	for pid in "$@"; do
		# never the calling shell or its parents' subshell
		[[ "$pid" == "$$" || "$pid" == "${BASHPID}" ]] && continue
		pids+=("$pid")
	done
	((${#pids[@]} == 0)) && return 0
	kill -TERM "${pids[@]}" 2>/dev/null
	for ((i = 0; i < DMSC_NET_KILL_WAIT_TENTHS; i++)); do
		left=0
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && left=1 && break
		done
		((left == 0)) && return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null
	return 0
}

# dmsc_net_cleanup: kills what runs in our namespaces, deletes them and their
# links, removes our cgroups. Safe to call twice and from a trap.
dmsc_net_cleanup() {
	local state="${DMSC_NET_STATE-}" ns hub pid n i
	local -a all=() pids=()
	[[ -n "$state" && -d "$state" ]] || return 0
	dmsc_cgroup_cleanup
	if [[ -f "$state/netns" ]]; then
		mapfile -t all <"$state/netns"
	fi
	# The processes of our namespaces, as `ip netns pids` finds them (the
	# same network namespace file), without a command per namespace: a
	# command costs seconds in a loaded TCG guest.
	for pid in /proc/[0-9]*; do
		for ns in "${all[@]}"; do
			if [[ "$pid/ns/net" -ef "/run/netns/$ns" ]]; then
				pids+=("${pid#/proc/}")
				break
			fi
		done
	done 2>/dev/null
	dmsc__kill_pids "${pids[@]}"
	hub="${DMSC_NET_PREFIX}hub"
	if dmsc__ns_exists "$hub"; then
		# deleting one end of a veth deletes both: ours are ${P}v1..N, one ip
		# process for all of them (-force: on past one already gone)
		n=0
		read -r n 2>/dev/null <"$state/links"
		for ((i = 1; i <= ${n:-0}; i++)); do
			echo "link del ${DMSC_NET_PREFIX}v$i"
		done | ip -n "$hub" -force -batch - >/dev/null 2>&1
	fi
	for ns in "${all[@]}"; do
		dmsc__ns_exists "$ns" && echo "netns del $ns"
	done | ip -force -batch - >/dev/null 2>&1
	rm -rf -- "$state"
	DMSC_NET_STATE=
	return 0
}

# dmsc_cgroup2_mount: prints the cgroup2 mount point.
dmsc_cgroup2_mount() {
	local mnt type
	while read -r _ mnt type _; do
		if [[ "$type" == cgroup2 ]]; then
			printf '%s\n' "$mnt"
			return 0
		fi
	done </proc/mounts
	dmsc__err "dmsc_cgroup2_mount: no cgroup2 mount in /proc/mounts"
	return 1
}

# dmsc_cgroup_make NAME: makes <cgroup2>/dmsc-test/NAME and prints its path.
dmsc_cgroup_make() {
	dmsc__need_init || return 1
	local name="${1-}" root path
	if [[ ! "$name" =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$ || "/$name/" == */../* || "/$name/" == */./* ]]; then
		dmsc__err "dmsc_cgroup_make: name \"$name\": relative path of [A-Za-z0-9_.-] parts"
		return 1
	fi
	root=$(dmsc_cgroup2_mount) || return 1
	path="$root/${DMSC_NET_CG_BASE}/$name"
	dmsc__record cgroups "$path" || return 1
	mkdir -p -- "$path" || {
		dmsc__err "dmsc_cgroup_make: cannot make $path"
		return 1
	}
	printf '%s\n' "$path"
}

# dmsc_cgroups VAR=NAME...: dmsc_cgroup_make "$P/NAME" for each, its
# path in VAR.
dmsc_cgroups() {
	local c path
	for c in "$@"; do
		path=$(dmsc_cgroup_make "$P/${c#*=}") || return 1
		printf -v "${c%%=*}" '%s' "$path"
	done
}

# dmsc__cgroup_procs DIR: every pid in DIR and below (read by the shell
# itself: a command costs seconds in a loaded TCG guest).
dmsc__cgroup_procs() {
	local f p had=0
	local -a files=()
	shopt -q globstar && had=1
	shopt -s globstar
	files=("$1"/**/cgroup.procs)
	((had)) || shopt -u globstar
	for f in "${files[@]}"; do
		[[ -f "$f" ]] || continue
		while read -r p; do
			printf '%s\n' "$p"
		done <"$f"
	done 2>/dev/null
}

dmsc__cgroup_populated() {
	[[ -n "$(dmsc__cgroup_procs "$1")" ]]
}

# dmsc_cgroup_cleanup: kills what is left in our cgroups (never moves it
# anywhere, least of all to the root), then removes them deepest first.
dmsc_cgroup_cleanup() {
	local state="${DMSC_NET_STATE-}" root base path dir i
	local -a all=() dirs=() pids=()
	[[ -n "$state" && -f "$state/cgroups" ]] || return 0
	mapfile -t all <"$state/cgroups"
	((${#all[@]} == 0)) && return 0
	root=$(dmsc_cgroup2_mount 2>/dev/null) || return 0
	base="$root/${DMSC_NET_CG_BASE}"
	for path in "${all[@]}"; do
		[[ -d "$path" && "$path" == "$base/"* ]] || continue
		if dmsc__cgroup_populated "$path"; then
			# cgroup.kill (5.14+) kills the whole subtree at once, also
			# processes forking while we read cgroup.procs
			if [[ -w "$path/cgroup.kill" ]]; then
				echo 1 >"$path/cgroup.kill" 2>/dev/null
			fi
			mapfile -t -O 0 pids < <(dmsc__cgroup_procs "$path")
			dmsc__kill_pids "${pids[@]}"
			for ((i = 0; i < DMSC_NET_KILL_WAIT_TENTHS; i++)); do
				dmsc__cgroup_populated "$path" || break
				sleep 0.1
			done
		fi
		# every directory from the deepest up, not above dmsc-test
		while read -r dir; do
			dirs+=("$dir")
		done < <(find "$path" -depth -type d 2>/dev/null)
		dir=${path%/*}
		while [[ "$dir" == "$base/"* ]]; do
			dirs+=("$dir")
			dir=${dir%/*}
		done
	done
	# deepest first over all of them, so a shared parent goes after its
	# children: one rmdir for all (it goes on past one it cannot remove)
	mapfile -t dirs < <(printf '%s\n' "${dirs[@]}" | awk -F/ 'NF { print NF "\t" $0 }' |
		sort -u -t $'\t' -k1,1nr -k2 | cut -f2-)
	((${#dirs[@]})) && rmdir -- "${dirs[@]}" 2>/dev/null
	for path in "${all[@]}"; do
		[[ -d "$path" ]] && dmsc__err "dmsc_cgroup_cleanup: $path is still there (busy?)"
	done
	[[ -d "$base" ]] && rmdir -- "$base" 2>/dev/null
	: >"$state/cgroups"
	return 0
}

# dmsc_run_in_cgroup CGPATH cmd...: runs cmd (a program or a shell function,
# e.g. dmsc_net_exec) in a child that first joins CGPATH. Join the cgroup
# before entering a namespace: `ip netns exec` remounts /sys, hiding the
# cgroup2 mount, so do `dmsc_run_in_cgroup "$cg" dmsc_net_exec c prog...`.
dmsc_run_in_cgroup() {
	local cg="${1-}"
	if [[ -z "$cg" || ! -w "$cg/cgroup.procs" ]]; then
		dmsc__err "dmsc_run_in_cgroup: \"$cg\" is not a cgroup we can join"
		return 1
	fi
	shift
	if (($# == 0)); then
		dmsc__err "dmsc_run_in_cgroup: no command"
		return 1
	fi
	# The child gets the caller's stderr back through fd 3; this shell's own
	# stderr is /dev/null while it waits, so that its "Killed" notice does not
	# litter test logs when dmsc_cgroup_cleanup kills the child.
	{
		(
			exec 2>&3 3>&-
			echo "$BASHPID" >"$cg/cgroup.procs" || {
				dmsc__err "dmsc_run_in_cgroup: cannot join $cg"
				exit 125
			}
			if declare -F -- "$1" >/dev/null; then
				"$@"
			else
				exec "$@"
			fi
		)
	} 3>&2 2>/dev/null
}

# dmsc_exec_in_cgroup CGPATH cmd...: this shell joins CGPATH and becomes cmd
# (a program): run it in the background (`dmsc_exec_in_cgroup CG prog &`),
# and $! is the program's pid, for kill and wait. As dmscd --l7-fastpath on
# starts a helper in a cgroup of the mesh (docs/design.md decision 99): the
# sockets it makes are the cgroup's from the start. Join before
# `ip netns exec` or `nsenter`, as above.
dmsc_exec_in_cgroup() {
	local cg="${1-}"
	shift
	echo "$BASHPID" >"$cg/cgroup.procs" || {
		dmsc__err "dmsc_exec_in_cgroup: cannot join \"$cg\""
		exit 125
	}
	exec "$@"
}

# dmsc_wait_ready FILE SECONDS: waits until FILE has a line "ready".
dmsc_wait_ready() {
	local file="${1-}" secs="${2-}" i
	if [[ -z "$file" || ! "$secs" =~ ^[0-9]+$ ]]; then
		dmsc__err "dmsc_wait_ready FILE SECONDS"
		return 1
	fi
	for ((i = 0; i < secs * 20; i++)); do
		if [[ -f "$file" ]] && grep -qx ready -- "$file" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	dmsc__err "dmsc_wait_ready: no \"ready\" in $file after ${secs}s"
	return 1
}

# dmsc_net_no_ipv6 HOST: no IPv6 in host HOST's namespace. gRPC's core opens
# dual-stack sockets (an IPv4 address as ::ffff:a.b.c.d) when IPv6 works;
# without it a gRPC client opens IPv4 sockets, which the IPv4 hooks see.
dmsc_net_no_ipv6() {
	local k
	for k in all default lo; do
		dmsc_net_exec "${1-}" sysctl -qw "net.ipv6.conf.$k.disable_ipv6=1" || return 1
	done
}

# dmsc_net_stop HOST: kills every process in host HOST's namespace (its
# servers) at once, and waits (at most 10 s) until none is left.
dmsc_net_stop() {
	local ns="${DMSC_NET_PREFIX}${1-}" pid i
	for pid in $(ip netns pids "$ns" 2>/dev/null); do
		kill -KILL "$pid" 2>/dev/null
	done
	for ((i = 0; i < 200; i++)); do
		[[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && return 0
		sleep 0.05
	done
	dmsc__err "dmsc_net_stop: processes left in $ns after 10s"
	return 1
}

# dmsc_testsrv HOST NAME MODE ADDR:PORT SECONDS OUT [OPTION...]: dmsc-testsrv
# ($SRV) in host HOST, in the background, its output in OUT ($! is its pid).
dmsc_testsrv() {
	local host=$1 name=$2 mode=$3 listen=$4 secs=$5 out=$6
	shift 6
	dmsc_net_exec "$host" "$SRV" --name "$name" --mode "$mode" --listen "$listen" \
		--max-seconds "$secs" "$@" >"$out" 2>&1 &
}

# dmsc_backends_ready FILE...: each test server's "ready" within 10 s, or
# the suite fails and ends.
dmsc_backends_ready() {
	local f
	for f in "$@"; do
		dmsc_wait_ready "$f" 10 || { t_fail "backend ready ($f)"; t_summary; exit 1; }
	done
}

# dmsc_helpers_stop DIR: SIGTERM to every dmsc-l7 (helper or tunnel) whose
# command line names DIR (a suite's pin or work directory), and up to 10 s
# for them to end. dmscd's helpers outlive it until the next dmscd's take
# over (docs/design.md decision 80): a suite that ran dmscd ends them.
dmsc_helpers_stop() {
	local dir=$1 pid i
	local -a pids=()
	[[ -n $dir ]] || return 0
	for pid in $(pgrep -f -- "dmsc-l7 .*$dir" 2>/dev/null); do
		[[ $pid != "$$" ]] && pids+=("$pid")
	done
	((${#pids[@]})) || return 0
	# the metrics files they name: one killed below (a replaced helper
	# that still drains a long connection, design decision 87) cannot
	# remove its own
	local -a files=()
	local f
	for pid in "${pids[@]}"; do
		f=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -A1 -x -- --metrics-file | tail -n 1)
		[[ $f == /run/dmsc/*.prom ]] && files+=("$f")
	done
	kill -TERM "${pids[@]}" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && break
			pid=
		done
		[[ -z $pid ]] && return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null
	((${#files[@]})) && rm -f "${files[@]}"
	return 0
}

# dmsc_kill_jobs: SIGTERM to each background job of this shell.
dmsc_kill_jobs() {
	local pid
	for pid in $(jobs -p); do
		kill "$pid" 2>/dev/null
	done
}
