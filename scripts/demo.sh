#!/usr/bin/env bash
# The dmsc demo: test hosts in network namespaces, dmsc installed on a demo
# cgroup, connections through a VIP split by weight inside the kernel, a
# live weight change, a drain, limits, health, IPv6, mutual TLS between
# hosts and a change of CA, etcd, and the L7 helper (HTTP/2, and IPv6 in
# its own namespace). Everything it makes is removed at the end,
# also on Ctrl-C. Nothing leaves the machine: hosts use 198.18.0.0/16,
# VIPs 198.19.0.0/16, and the client has no default route.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/tests/lib/kernel.sh"

BIN=${BIN:-$TOP/build}
CTL=$BIN/dmscctl
SRV=$BIN/tools/dmsc-testsrv
PROBE=$BIN/tools/dmsc-probe
POLICY=$TOP/policies/reviews.json
CONNECTIONS=${DEMO_CONNECTIONS:-2000}
P=dmscdemo$$
P=${P:0:12}

if [[ $(id -u) -ne 0 ]]; then
	echo "demo: needs root (it loads BPF programs and makes network namespaces): run make demo as root" >&2
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-demo.XXXXXX")
DPIDS=() EPID='' MTLS_PROMS=()
cleanup() {
	local p
	echo
	echo "== cleaning up"
	for p in "${DPIDS[@]}" $EPID; do
		kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	dmsc_helpers_stop "$T" # dmscd's helpers outlive it (decision 80)
	"$CTL" uninstall >/dev/null 2>&1
	[[ -d $T/bpffs/hostb ]] && DMSC_PIN_DIR=$T/bpffs/hostb "$CTL" uninstall >/dev/null 2>&1
	for p in mta mtb; do
		[[ -d $T/bpffs/$p ]] && DMSC_PIN_DIR=$T/bpffs/$p "$CTL" uninstall >/dev/null 2>&1
	done
	rm -f "${MTLS_PROMS[@]}"
	dmsc_net_cleanup
	mountpoint -q "$T/bpffs" && umount "$T/bpffs"
	rm -rf "$T"
	echo "   removed the demo's namespaces, cgroups, processes, programs and pins"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STEPS=16 STEP=0
step() {
	STEP=$((STEP + 1))
	printf '\n== %d/%d %s\n' "$STEP" "$STEPS" "$*"
}
die() {
	echo "demo: $*" >&2
	exit 1
}

# The demo pins into a BPF filesystem of its own, so that it can never touch
# a dmsc that is installed on this host for real.
mkdir -p "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || die "cannot mount a BPF filesystem"
export DMSC_PIN_DIR=$T/bpffs/dmsc

step "test hosts in network namespaces"
dmsc_net_init "$P" || die "netns setup"
dmsc_net_host client 198.18.0.2/16 || die "host client"
dmsc_net_host node1 198.18.1.2/16 || die "host node1"
dmsc_net_host node2 198.18.1.3/16 || die "host node2"
dmsc_net_host node3 198.18.1.4/16 || die "host node3"
declare -A SPID # backend name -> its pid
start() { # host name mode addr:port
	dmsc_net_exec "$1" "$SRV" --name "$2" --mode "$3" --listen "$4" --max-seconds 600 \
		>"$T/$2-$3.out" 2>&1 &
	SPID[$2]=$!
	dmsc_wait_ready "$T/$2-$3.out" 10 || die "backend $2 did not start"
}
start node1 reviews-v1 id 198.18.1.2:9080
start node2 reviews-v2 id 198.18.1.3:9080
dmsc_net_exec node3 timeout 600 iperf3 -s -B 198.18.1.4 -p 5201 >/dev/null 2>&1 &
start node1 ratings-1 http 198.18.1.2:8080
start node2 ratings-2 http 198.18.1.3:8080
start node3 ratings-3 http 198.18.1.4:8080
echo "   client 198.18.0.2 (no default route: an untranslated VIP cannot leave)"
echo "   node1  198.18.1.2  reviews-v1 :9080, ratings-1 :8080"
echo "   node2  198.18.1.3  reviews-v2 :9080, ratings-2 :8080"
echo "   node3  198.18.1.4  ratings-3 :8080, downloads (iperf3) :5201"

step "install dmsc on the demo cgroup"
CG=$(dmsc_cgroup_make "$P/shop") || die "cgroup"
"$CTL" install --cgroup "$CG" || die "install failed"
"$CTL" status

step "apply $(basename "$POLICY")"
"$CTL" apply "$POLICY" || die "apply failed"
"$CTL" show services

# drive N LABEL: N connections from the client, inside the demo cgroup, in
# batches so that progress shows; leaves the merged JSON in $T/LABEL.json.
drive() {
	local n=$1 label=$2 batch=250 done=0 k
	: >"$T/$label.parts"
	while ((done < n)); do
		k=$((n - done < batch ? n - done : batch))
		dmsc_run_in_cgroup "$CG" dmsc_net_exec client "$PROBE" --connect 198.19.0.10:9080 \
			--count "$k" --parallel 8 --max-seconds 60 --json >>"$T/$label.parts" ||
			die "probe failed"
		done=$((done + k))
		# Progress on a terminal; one line when the output is a log.
		[[ -t 1 ]] && printf '\r   %d/%d connections' "$done" "$n"
	done
	[[ -t 1 ]] && echo || echo "   $n connections"
	jq -s '{ok: (map(.ok) | add), failed: (map(.failed) | add),
		peer_is_target: (map(.peer_is_target) | add),
		backends: (map(.backends) | reduce .[] as $b ({}; reduce ($b | keys[]) as $k (.; .[$k] += $b[$k]))),
		errors: (map(.errors) | reduce .[] as $e ({}; reduce ($e | keys[]) as $k (.; .[$k] += $e[$k])))}' \
		"$T/$label.parts" >"$T/$label.json"
}

# table LABEL: configured weight next to the observed share.
table() {
	local label=$1
	"$CTL" show services -o json >"$T/show.json"
	printf '   %-12s %-18s %8s %10s %10s %10s\n' backend address weight configured "slot share" observed
	jq -r --slurpfile r "$T/$label.json" '
		.services[] | select(.name == "reviews") |
		(.backends | map(.weight) | add) as $total |
		.backends | to_entries[] |
		"reviews-v\(.key + 1)\t\(.value.address)\t\(.value.weight)\t\(if $total > 0 then 100 * .value.weight / $total else 0 end)\t\(100 * .value.share)\t\(100 * (($r[0].backends["reviews-v\(.key + 1)"] // 0) / ([$r[0].ok, 1] | max)))"' \
		"$T/show.json" |
		while IFS=$'\t' read -r name addr w conf slot obs; do
			printf '   %-12s %-18s %8s %9.1f%% %9.1f%% %9.1f%%\n' "$name" "$addr" "$w" "$conf" "$slot" "$obs"
		done
	jq -r '"   \(.ok) connected, \(.failed) failed, getpeername() showed the VIP on \(.peer_is_target)" +
		(if (.errors | length) > 0 then ", errors: \(.errors)" else "" end)' "$T/$label.json"
}

step "$CONNECTIONS connections to reviews 198.19.0.10:9080, split in the kernel"
drive "$CONNECTIONS" split
table split
echo "   ratings 198.19.0.11:80, 30 requests with curl:"
for i in $(seq 1 30); do
	dmsc_run_in_cgroup "$CG" dmsc_net_exec client curl -sS --max-time 5 http://198.19.0.11/
done | sort | uniq -c | sed 's/^/     /'

step "live change: reviews to 50/50, only the changed entries are written"
jq '.services[0].backends[0].weight = 50 | .services[0].backends[1].weight = 50' "$POLICY" >"$T/5050.json"
"$CTL" apply "$T/5050.json"
drive $((CONNECTIONS / 2)) half
table half

step "session affinity: with \"affinity\": \"client\" each client keeps one backend"
jq '.services[0].affinity = "client"' "$T/5050.json" >"$T/affinity.json"
"$CTL" apply "$T/affinity.json" >/dev/null || die "apply failed"
echo "   still 50/50; five clients (cgroups of the shop), 40 connections each:"
for i in 1 2 3 4 5; do
	cg=$(dmsc_cgroup_make "$P/shop/client$i") || die "cgroup"
	dmsc_run_in_cgroup "$cg" dmsc_net_exec client "$PROBE" --connect 198.19.0.10:9080 \
		--count 40 --parallel 4 --json |
		jq -r --arg c "client$i" '"     \($c): " + ([.backends | to_entries[] | "\(.value) to \(.key)"] | join(", "))'
done
echo "   (each client: all its connections on one backend; iperf3, FTP, in-memory sessions need that)"
"$CTL" apply "$T/5050.json" >/dev/null || die "apply failed"

step "drain reviews-v2 (weight 0), then refuse everything (all weights 0)"
jq '.services[0].backends[1].weight = 0' "$POLICY" >"$T/drain.json"
"$CTL" apply "$T/drain.json"
drive 500 drain
table drain
jq '.services[0].backends[0].weight = 0 | .services[0].backends[1].weight = 0' "$POLICY" >"$T/zero.json"
"$CTL" apply "$T/zero.json"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client "$PROBE" --connect 198.19.0.10:9080 --count 20 --json |
	jq -r '"   20 connections: \(.ok) connected, refused: \(.errors)"'

step "limits in the kernel: 50 connections/s (burst 10) on reviews, 2.5 MB/s on downloads"
jq '.services[0].rate_limit = {"connections_per_second": 50, "burst": 10} |
    .services += [{"name": "downloads", "vip": "198.19.0.12", "port": 5201,
                   "backends": [{"address": "198.18.1.4", "port": 5201}],
                   "rate_limit": {"bytes_per_second": 2500000}}]' "$POLICY" >"$T/limits.json"
"$CTL" apply "$T/limits.json"
echo "   a client opening connections to reviews as fast as it can for 3 s:"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client "$PROBE" --connect 198.19.0.10:9080 \
	--count 1000000 --parallel 4 --max-seconds 3 --timeout-ms 1000 --json |
	jq -r '"   \(.ok) connected in \(.elapsed_ms / 1000) s (limit: 50/s x \(.elapsed_ms / 1000) s + burst 10 = \(50 * .elapsed_ms / 1000 + 10 | floor)), \(.errors.EPERM // 0) refused at connect() with EPERM"'
echo "   iperf3 to downloads for 4 s (the first second, the allowed burst, left out):"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 30 iperf3 -c 198.19.0.12 -p 5201 -t 4 -O 1 -J |
	jq -r '"   goodput \(.end.sum_received.bits_per_second / 8 | floor) B/s against a limit of 2500000 B/s (\(.end.sum_received.bits_per_second / 8 / 25000 | floor)%)"'

echo
"$CTL" stats

step "backend health: a backend that dies leaves the rotation after a few failed connects"
jq '.services[0].health = {"passive": {"consecutive_failures": 3, "base_ejection_ms": 30000}}' \
	"$POLICY" >"$T/health.json"
"$CTL" apply "$T/health.json" >/dev/null || die "apply with health failed"
# (start's pid is the subshell that runs the server: its child is the server)
pkill -TERM -P "${SPID[reviews-v2]}" && wait "${SPID[reviews-v2]}" 2>/dev/null
echo "   reviews-v2 stopped; passive health: 3 failed connects in a row eject it for 30 s"
drive 500 health
table health
"$CTL" show services | grep -E '^ +198\.18\.1\.3:9080' | head -n 1 | sed 's/^ */   show services: /'
start node2 reviews-v2 id 198.18.1.3:9080
echo "   (the kernel ejected it without any agent running; dmscd's active probes bring it back early)"

step "IPv6: a 70/30 split over an IPv6 VIP, and a dual-stack socket through ::ffff:VIP"
dmsc_net_addr6 client 2001:2:1::2/64 && dmsc_net_addr6 node1 2001:2:1::12/64 &&
	dmsc_net_addr6 node2 2001:2:1::13/64 || die "IPv6 addresses"
for h in 1 2; do
	dmsc_net_exec "node$h" python3 "$TOP/tests/tools/v6-peer.py" serve --name "web6-v$h" \
		--listen "[2001:2:1::1$((h + 1))]:8080" --listen "198.18.1.$((h + 1)):8081" --max-seconds 600 \
		>"$T/web6-$h.out" 2>&1 &
	dmsc_wait_ready "$T/web6-$h.out" 20 || die "IPv6 backend $h did not start"
done
jq '.services += [{"name": "web6", "vip": "2001:2:2::10", "port": 80,
                   "backends": [{"address": "2001:2:1::12", "port": 8080, "weight": 70},
                                {"address": "2001:2:1::13", "port": 8080, "weight": 30}]},
                  {"name": "web4", "vip": "198.19.0.13", "port": 80,
                   "backends": [{"address": "198.18.1.2", "port": 8081},
                                {"address": "198.18.1.3", "port": 8081}]}]' "$POLICY" >"$T/v6.json"
"$CTL" apply "$T/v6.json" >/dev/null || die "apply with IPv6 failed"
"$CTL" show services | grep -A 2 '^web6' | sed 's/^/   /'
urls=()
for ((i = 0; i < 200; i++)); do urls+=("http://[2001:2:2::10]:80/"); done
echo "   curl -6, 200 connections to [2001:2:2::10]:80 (no host has a route to it):"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client curl -6 -g -s --max-time 60 "${urls[@]}" |
	sort | uniq -c | sed 's/^/     /'
echo "   a dual-stack socket (AF_INET6, IPV6_V6ONLY off: Java, Go) to ::ffff:198.19.0.13, 20 connections:"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client python3 "$TOP/tests/tools/v6-peer.py" tcp --dual \
	--to 198.19.0.13:80 --count 20 |
	jq -r '"     \(.replies) answered by \(.backends), getpeername() showed ::ffff:VIP on \(.peer_is_target)"'

step "mutual TLS between hosts: a VIP on host mta, its backend on host mtb"
# Two more hosts, each a dmscd with a certificate of the demo's CA, a
# datapath on a cgroup of its own, and its tunnel (docs/mtls.md). A
# workload on mta connects to the VIP; connect4 hands it to mta's tunnel,
# which carries it over TLS 1.3 to mtb's, which checks its cgroup against
# allow_from and delivers it to the backend.
dmsc_net_host mta 198.18.2.1/16 && dmsc_net_host mtb 198.18.2.2/16 || die "hosts mta, mtb"
"$CTL" ca init "$T/ca" --trust-domain demo.test >/dev/null &&
	"$CTL" ca issue "$T/ca" --host mta --out "$T/mta" >/dev/null &&
	"$CTL" ca issue "$T/ca" --host mtb --out "$T/mtb" >/dev/null || die "certificates"
echo "   dmscctl ca init; ca issue --host mta, --host mtb (ECDSA P-256, 24 h, spiffe://demo.test/host/NAME)"
dmsc_net_exec mtb "$SRV" --name orders --mode http --listen 198.18.2.2:8080 --max-seconds 600 \
	>"$T/orders.out" 2>&1 &
dmsc_wait_ready "$T/orders.out" 10 || die "backend orders did not start"
dmsc_net_exec mtb "$SRV" --name catalog --mode http --listen 198.18.2.2:8081 --max-seconds 600 \
	>"$T/catalog.out" 2>&1 &
dmsc_wait_ready "$T/catalog.out" 10 || die "backend catalog did not start"
dmsc_net_exec mtb "$SRV" --name payments --mode http --listen 198.18.2.2:8082 --max-seconds 600 \
	>"$T/payments.out" 2>&1 &
dmsc_wait_ready "$T/payments.out" 10 || die "backend payments did not start"
CGM=$(dmsc_cgroup_make "$P/mta") && mkdir "$CGM/checkout" "$CGM/stranger" || die "cgroup"
cat >"$T/mesh.json" <<EOF
{ "mtls": "required", "hosts": { "mta": "198.18.2.1:15008", "mtb": "198.18.2.2:15008" },
  "services": [ { "name": "orders", "vip": "198.19.2.1", "port": 80,
    "allow_from": [ "${CGM#"$(dmsc_cgroup2_mount)"/}/checkout" ],
    "health": { "active": { "type": "tcp", "interval_ms": 1000, "timeout_ms": 1000 } },
    "backends": [ { "address": "198.18.2.2", "port": 8080, "host": "mtb" } ] },
    { "name": "catalog", "vip": "198.19.2.2", "port": 80, "protocol": "http",
    "allow_from": [ "${CGM#"$(dmsc_cgroup2_mount)"/}/checkout" ],
    "backends": [ { "address": "198.18.2.2", "port": 8081, "host": "mtb" } ] },
    { "name": "payments", "vip": "198.19.2.3", "port": 80,
    "allow_from": [ "${CGM#"$(dmsc_cgroup2_mount)"/}/checkout" ],
    "health": { "passive": { "consecutive_failures": 3 } },
    "backends": [ { "address": "198.18.2.2", "port": 8082, "host": "mtb" },
      { "address": "198.18.2.2", "port": 8083, "host": "mtb" } ] } ] }
EOF
for h in mta mtb; do
	DMSC_PIN_DIR=$T/bpffs/$h "$CTL" install --cgroup "$(dmsc_cgroup_make "$P/$h")" >/dev/null ||
		die "install on $h"
	# (mta's address ends in .1, mtb's in .2)
	[[ $h == mta ]] && addr=198.18.2.1 || addr=198.18.2.2
	nsenter --net="/run/netns/${DMSC_NET_PREFIX}$h" "$BIN/dmscd" --pin-dir "$T/bpffs/$h" \
		--policy "$T/mesh.json" --mtls-dir "$T/$h" --mtls-listen "$addr:15008" \
		--metrics off >"$T/dmscd-$h.log" 2>&1 &
	DPIDS+=($!)
	MTLS_PROMS+=("/run/dmsc/dmsc-tunnel.$!.prom")
done
tunnels_up() {
	grep -q "takes the kernel's handoffs" "$T/dmscd-mta.log" &&
		dmsc_net_exec mtb ss -Htln "sport = :15008" | grep -q .
}
t_wait 30 tunnels_up || die "the tunnels did not start (see $T/dmscd-mta.log, $T/dmscd-mtb.log)"
MARK="card-4111-1111-$RANDOM"
# The capture is on mta's link in the hub, which every packet between mta
# and mtb crosses. ip netns exec execs tcpdump, so $! is tcpdump itself: a
# SIGINT makes it write what it holds and exit, and the wait sees it gone.
CAPLINK=$(dmsc_net_link mta) || die "mta's link in the hub"
ip netns exec "${DMSC_NET_PREFIX}hub" tcpdump -i "$CAPLINK" -U -s 0 -w "$T/mtls.pcap" \
	>"$T/tcpdump.out" 2>&1 &
TDPID=$!
t_wait 5 grep -q "listening on" "$T/tcpdump.out" || die "tcpdump on $CAPLINK did not start: $(cat "$T/tcpdump.out")"
echo "   a workload of mta (cgroup checkout) posts \"$MARK\" to orders 198.19.2.1:80:"
dmsc_run_in_cgroup "$CGM/checkout" dmsc_net_exec mta curl -sS -m 10 --data "$MARK" \
	-w ' (HTTP %{http_code}, peer %{remote_ip})\n' http://198.19.2.1/ | sed 's/^/     /'
echo "   for contrast, mta posts it in plain text straight to orders' backend 198.18.2.2:8080:"
dmsc_net_exec mta curl -sS -m 10 -o /dev/null --data "$MARK" \
	-w '     (HTTP %{http_code}, peer %{remote_ip})\n' http://198.18.2.2:8080/
cap() { tcpdump -r "$T/mtls.pcap" -n -A "$@" 2>/dev/null; }
seen() { cap "$1" | grep -c -- "$MARK"; }
t_wait 5 bash -c "tcpdump -r '$T/mtls.pcap' -A 'tcp port 8080' 2>/dev/null | grep -q -- '$MARK'"
kill -INT "$TDPID" 2>/dev/null
wait "$TDPID" 2>/dev/null
npk=$(tcpdump -r "$T/mtls.pcap" -n 'tcp port 15008' 2>/dev/null | wc -l)
echo "   the capture on mta's link in the hub ($CAPLINK, tcpdump -i $CAPLINK):"
echo "     $npk packets between the tunnels (tcp port 15008), $(seen 'tcp port 15008') holding \"$MARK\""
echo "     $(tcpdump -r "$T/mtls.pcap" -n 'tcp port 8080' 2>/dev/null | wc -l) packets in plain text (tcp port 8080), $(seen 'tcp port 8080') holding \"$MARK\""
((npk > 0)) || die "the capture on $CAPLINK saw no packet between the tunnels"
echo "   an http service across the hosts too, catalog 198.19.2.2:80: mta's dmsc-l7 routes the request"
echo "   and hands its connection to mta's tunnel, vouching for the client's cgroup (decision 75):"
catalog() { dmsc_run_in_cgroup "$CGM/checkout" dmsc_net_exec mta curl -sS -m 5 -o /dev/null -w '%{http_code}' http://198.19.2.2/ 2>/dev/null; }
catalog_ok() { [[ $(catalog) == 200 ]]; }
t_wait 20 catalog_ok || die "catalog did not answer through mta's dmsc-l7 (see $T/dmscd-mta.log)"
dmsc_run_in_cgroup "$CGM/checkout" dmsc_net_exec mta curl -sS -m 10 -o /dev/null \
	-w '     (HTTP %{http_code}, peer %{remote_ip}, through dmsc-l7 and the tunnel)\n' http://198.19.2.2/
echo "   mta's dmscd probes orders' backend through the tunnel too, as a probe past allow_from"
echo "   (straight, mtb's kernel would drop the SYN and the backend would be out: decision 77):"
orders_health() {
	DMSC_PIN_DIR=$T/bpffs/mta "$CTL" show services -o json 2>/dev/null |
		jq -r '.services[] | select(.name == "orders") | .backends[0] |
			"\(.address): \(.health.state), \(.health.probes) probes (\(.health.why))"'
}
probed() { [[ $(orders_health) =~ :\ in,\ ([0-9]+)\ probes && ${BASH_REMATCH[1]} -ge 2 ]]; }
t_wait 10 probed || die "mta's probes of orders' backend did not pass: $(orders_health)"
echo "     $(orders_health)"
echo "   mtb's tunnel, streams by the identity mta vouched for (the probes' own, /dmsc-health/tcp):"
# (the metrics file is rewritten every second: orders' stream, catalog's, the probes')
dest_streams() { (($(awk '/streams_total\{side="dest"/ { n += $NF } END { print n + 0 }' "${MTLS_PROMS[1]}" 2>/dev/null) >= 4)); }
t_wait 5 dest_streams
grep 'streams_total{side="dest"' "${MTLS_PROMS[1]}" | sed 's/^/     /'
echo "   a workload of mta outside allow_from (cgroup stranger), same VIP: refused by mta's connect4"
echo "   (the same policy on both hosts; mtb's tunnel would refuse it too, docs/mtls.md):"
dmsc_run_in_cgroup "$CGM/stranger" dmsc_net_exec mta curl -sS -m 10 -o /dev/null http://198.19.2.1/ 2>&1 |
	sed 's/^/     /'
echo "   payments 198.19.2.3:80 has two backends on mtb, one of them down (nothing on :8083), and"
echo "   passive health only: mta's tunnel counts the connects mtb could not make (decision 78),"
echo "   and moves such a connection to the other backend before the workload's bytes left (decision 81)"
printf '     20 connections from checkout: '
for _ in $(seq 20); do
	if dmsc_run_in_cgroup "$CGM/checkout" dmsc_net_exec mta curl -sS -m 5 -o /dev/null http://198.19.2.3/ 2>/dev/null; then
		printf '.'
	else
		printf 'x'
	fi
done
echo "  (x: a connection that failed)"
moved() { grep -oE 'connect_retries_total\{result="moved"\} [0-9]+' "${MTLS_PROMS[0]}" 2>/dev/null | cut -d' ' -f2; }
failed() { grep -oE 'backend_health_total\{event="connect_failed"\} [0-9]+' "${MTLS_PROMS[0]}" 2>/dev/null | cut -d' ' -f2; }
# (the metrics file is rewritten every second: until it holds the three
# failed connects that ejected the dead backend, and their moves)
moved_all() { (($(failed) >= 3 && $(moved) == $(failed))); }
t_wait 5 moved_all
echo "     mta's tunnel moved $(moved) of them to the live backend, then ejected the dead one:"
grep -m1 "tunnel: health: payments ejected" "$T/dmscd-mta.log" | sed 's/^/     /'

step "a change of CA: mtb moves to a new CA, mta is refused until it holds the new CA's certificate"
# (docs/design.md decision 54) Each tunnel reads its certificate files every
# second. With mtb's from a new CA, mtb checks its connected peers again:
# mta's certificate is of the old CA, so mta's connection takes no new
# streams (the open ones finish) and mta's next handshake fails; once mta
# holds a certificate of the new CA too, it reaches mtb again.
reloads() { grep -c 'certificates in .* reloaded' "$T/dmscd-$1.log"; }
reloaded_more() { (($(reloads "$1") > $2)); }
post_orders() { # the workload of mta posts the mark to orders; curl's answer, or why not
	dmsc_run_in_cgroup "$CGM/checkout" dmsc_net_exec mta curl -sS -m 10 --data "$MARK" \
		-w ' (HTTP %{http_code})\n' http://198.19.2.1/ 2>&1
}
posted() { [[ $(post_orders) == *"(HTTP 200)"* ]]; }
"$CTL" ca init "$T/ca2" --trust-domain demo.test >/dev/null || die "a new CA"
n=$(reloads mtb)
"$CTL" ca issue "$T/ca2" --host mtb --out "$T/mtb" >/dev/null || die "mtb's certificate of the new CA"
echo "   dmscctl ca init NEWCA; ca issue NEWCA --host mtb --out <mtb's directory>"
t_wait 10 reloaded_more mtb "$n" || die "mtb's tunnel did not take its new files (see $T/dmscd-mtb.log)"
t_wait 3 grep -q 'takes no new streams' "$T/dmscd-mtb.log" &&
	grep -h 'takes no new streams' "$T/dmscd-mtb.log" | tail -n 1 | sed 's/^.*tunnel: tunnel: /     mtb: /'
echo "   the workload of mta posts to orders again:"
post_orders | sed 's/^/     /'
t_wait 5 grep -q 'connection to 198.18.2.2:15008 refused' "$T/dmscd-mta.log" &&
	grep 'connection to 198.18.2.2:15008 refused' "$T/dmscd-mta.log" | tail -n 1 | sed 's/^.*tunnel: tunnel: /     mta: /'
n=$(reloads mta)
"$CTL" ca issue "$T/ca2" --host mta --out "$T/mta" >/dev/null || die "mta's certificate of the new CA"
t_wait 10 reloaded_more mta "$n" || die "mta's tunnel did not take its new files (see $T/dmscd-mta.log)"
echo "   ca issue NEWCA --host mta: both hosts on the new CA, the same post:"
t_wait 10 posted
post_orders | sed 's/^/     /'

step "many hosts: the policy carried by etcd, each host gets only its namespaces"
# The agents' host: a network namespace of its own on the demo's bridge
# (198.18.0.1), so that what its agents and their L7 helper connect to is
# the demo's hosts and nothing else. In it, a real etcd on its loopback (a
# data directory of the demo's own) and two agents, each a dmscd with its
# own cgroup and pins: host A (the demo's datapath) subscribes to namespace
# "shop", host B to namespace "ads".
if ! command -v etcd >/dev/null; then
	echo "   etcd is not installed (scripts/install-deps.sh installs etcd-server): step left out"
	exit 0
fi
dmsc_net_host agents 198.18.0.1/16 || die "host agents"
AGENTS=${DMSC_NET_PREFIX}agents
# (nsenter, not ip netns exec: the latter mounts a /sys of its own, without
# the cgroup2 mount that dmscd attaches through)
in_agents() { nsenter --net="/run/netns/$AGENTS" "$@"; }
EURL=http://127.0.0.1:2379
# (not through a shell function, so that $! is etcd's and dmscd's pid)
nsenter --net="/run/netns/$AGENTS" etcd --name dmsc-demo --data-dir "$T/etcd" --listen-client-urls "$EURL" \
	--advertise-client-urls "$EURL" --listen-peer-urls http://127.0.0.1:2380 \
	--initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster dmsc-demo=http://127.0.0.1:2380 >"$T/etcd.log" 2>&1 &
EPID=$!
t_wait 20 in_agents curl -sf --max-time 1 "$EURL/health" -o /dev/null || die "etcd did not start (see $T/etcd.log)"
echo "   etcd $(etcd --version | head -n 1 | awk '{print $3}') on $EURL"
CGB=$(dmsc_cgroup_make "$P/ads") || die "cgroup"
hosta() { # host A's dmscd (again after a restart: the same command line)
	DMSC_PIN_DIR=$T/bpffs/dmsc nsenter --net="/run/netns/$AGENTS" "$BIN/dmscd" --etcd "$EURL" \
		--namespace shop --metrics 127.0.0.1:0 >>"$T/hosta.log" 2>&1 &
	HOSTA=$!
	DPIDS+=("$HOSTA")
}
hosta
DMSC_PIN_DIR=$T/bpffs/hostb nsenter --net="/run/netns/$AGENTS" "$BIN/dmscd" --etcd "$EURL" --namespace ads --cgroup "$CGB" \
	--metrics 127.0.0.1:0 >"$T/hostb.log" 2>&1 &
DPIDS+=($!)
applied() { grep -c '^dmscd: applied .*(etcd)' "$1" 2>/dev/null; }
# applied_more LOG N: LOG shows more than N applies from etcd (for t_wait,
# which runs its command again each time).
applied_more() { (($(applied "$1") > $2)); }
for h in a b; do
	t_wait 60 applied_more "$T/host$h.log" 0 || {
		tail -n 20 "$T/host$h.log" >&2
		die "host ${h^^}'s dmscd did not read etcd"
	}
done
echo "   host A: dmscd --etcd ... --namespace shop    host B: dmscd --etcd ... --namespace ads"
metric() { # LOG NAME: one of a dmscd's own series
	in_agents curl -s --max-time 10 "$(grep -o 'http://[0-9.:]*/metrics' "$1" | tail -n 1)" |
		awk -v k="$2" '$1 == k { print $2 }'
}
received() { echo "A $(metric "$T/hosta.log" dmsc_etcd_received_bytes_total) B $(metric "$T/hostb.log" dmsc_etcd_received_bytes_total)"; }
read -r _ a0 _ b0 <<<"$(received)"
n=$(applied "$T/hosta.log")
jq '.services[0].backends[0].weight = 80 | .services[0].backends[1].weight = 20' "$POLICY" >"$T/shop.json"
echo "   dmscctl publish $(basename "$POLICY") --namespace shop:"
in_agents "$CTL" publish "$T/shop.json" --etcd "$EURL" --namespace shop | sed 's/^/     /'
t_wait 20 applied_more "$T/hosta.log" "$n" || die "host A did not apply the publish"
grep '^dmscd: applied .*(etcd)' "$T/hosta.log" | tail -n 1 | sed 's/^/     host A: /'
echo "   host A holds: $("$CTL" show services -o json | jq -c '[.services[].name]')," \
	"host B holds: $(DMSC_PIN_DIR=$T/bpffs/hostb "$CTL" show services -o json | jq -c '[.services[].name]')"
n=$(applied "$T/hosta.log")
read -r _ a1 _ b1 <<<"$(received)"
jq '.services[0].backends[0].weight = 50 | .services[0].backends[1].weight = 50' "$T/shop.json" >"$T/shop5050.json"
t0=$(date +%s%N)
in_agents "$CTL" publish "$T/shop5050.json" --etcd "$EURL" --namespace shop >/dev/null
t_wait 20 applied_more "$T/hosta.log" "$n" || die "host A did not apply the weight change"
t1=$(date +%s%N)
read -r _ a2 _ b2 <<<"$(received)"
echo "   one weight change published: on host A in $(((t1 - t0) / 1000000)) ms (publish to map write, as seen" \
	"from here), $((a2 - a1)) bytes received by A, $((b2 - b1)) by B (not subscribed)"
grep '^dmscd: applied .*(etcd)' "$T/hosta.log" | tail -n 1 | sed 's/^/     host A: /'
drive 500 etcd
table etcd
# (docs/design.md decision 55) a backend names its host; the host's tunnel
# address is a key of its own, one for every namespace, that publish writes
echo "   orders (its backend on host mtb) published to namespace orders: mtb's tunnel address is a key of"
echo "   its own, PREFIX/hosts/NAME, which dmscd --mtls-dir watches. dmscctl publish, then dmscctl get:"
in_agents "$CTL" publish "$T/mesh.json" --etcd "$EURL" --namespace orders | sed 's/^/     /'
in_agents "$CTL" get --etcd "$EURL" --namespace orders | sed 's/^/     /'

step "L7 with nothing configured: an http service from etcd, HTTP/2 routed per stream"
# The application: a process of the mesh cgroup in the client's network
# namespace. dmscd starts dmsc-l7 by itself once a policy has an http
# service, and the helper opens a listener inside that namespace.
dmsc_run_in_cgroup "$CG" dmsc_net_exec client sleep 600 &
DPIDS+=($!)
for h in 1 2; do
	mkdir -p "$T/www$h/canary"
	echo "web-v$h" >"$T/www$h/id"
	echo "web-v$h" >"$T/www$h/canary/id"
	dmsc_net_exec "node$h" nghttpd --no-tls -d "$T/www$h" --address "198.18.1.$((h + 1))" 8443 \
		>"$T/nghttpd$h.out" 2>&1 &
done
# a WebSocket echo server (Python's websockets) for "chat"
dmsc_net_exec node1 /usr/bin/python3 "$TOP/tests/tools/ws-peer.py" server 198.18.1.2 8444 \
	--max-seconds 600 >"$T/ws.out" 2>&1 &
h2up() { dmsc_net_exec "$1" ss -Htln "sport = :8443" | grep -q .; }
t_wait 10 h2up node1 && t_wait 10 h2up node2 && t_wait 10 grep -q ready "$T/ws.out" ||
	die "nghttpd or the WebSocket server did not start"
jq '.services += [{"name": "web", "vip": "198.19.0.14", "port": 80, "protocol": "http",
                   "backends": [{"address": "198.18.1.2", "port": 8443, "weight": 80, "labels": {"version": "v1"}},
                                {"address": "198.18.1.3", "port": 8443, "weight": 20, "labels": {"version": "v2"}}],
                   "routes": [{"match": {"path_prefix": "/canary/"}, "backends": {"version": "v2"}}]},
                  {"name": "chat", "vip": "198.19.0.15", "port": 80, "protocol": "http",
                   "backends": [{"address": "198.18.1.2", "port": 8444}]}]' \
	"$T/shop5050.json" >"$T/shopweb.json"
in_agents "$CTL" publish "$T/shopweb.json" --etcd "$EURL" --namespace shop >/dev/null || die "publish web failed"
ino=$(stat -L -c %i "/run/netns/${DMSC_NET_PREFIX}client")
t_wait 30 grep -q "listening in network namespace $ino " "$T/hosta.log" ||
	die "dmsc-l7 did not listen in the client's namespace (see $T/hosta.log)"
echo "   dmscd started dmsc-l7; it listens inside the client's namespace (no flag, no address to pick)"
urls=()
for ((i = 0; i < 50; i++)); do urls+=("http://198.19.0.14/id?$i"); done
echo "   nghttp (nghttp2's client), 50 streams for /id on one HTTP/2 connection (weights 80/20):"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 30 nghttp "${urls[@]}" |
	sort | uniq -c | sed 's/^/     /'
echo "   curl --http2-prior-knowledge, 10 requests for /canary/id (a route to version v2):"
for ((i = 0; i < 10; i++)); do
	dmsc_run_in_cgroup "$CG" dmsc_net_exec client curl -sS --http2-prior-knowledge --max-time 10 \
		http://198.19.0.14/canary/id
done | sort | uniq -c | sed 's/^/     /'
echo "   (each stream routed on its own: an L4 balancer sends a connection's 50 streams to one backend)"
# (decision 96) A namespace the helper has not met: it hears of the exec
# from the kernel and listens there before curl connects.
for i in 1 2 3 4 5; do
	dmsc_net_host "ctr$i" "198.18.0.$((40 + i))/16" || die "host ctr$i"
done
echo "   5 new containers (a namespace each, made now), one curl for /canary/id as each one's only process:"
for i in 1 2 3 4 5; do
	dmsc_run_in_cgroup "$CG" dmsc_net_exec "ctr$i" curl -sS --http2-prior-knowledge --max-time 10 \
		http://198.19.0.14/canary/id 2>&1
done | sort | uniq -c | sed 's/^/     /'
echo "   (the helper listened in each before its curl connected: routed from the first request;"
echo "    one it had not met yet would be balanced at L4, never refused)"
echo "   a WebSocket to chat 198.19.0.15:80 (Python's websockets): the helper forwards the Upgrade, then"
echo "   carries bytes both ways (decision 82): 3 echoes, 1 MiB byte-exact, the server's close code:"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 30 /usr/bin/python3 \
	"$TOP/tests/tools/ws-peer.py" client ws://198.19.0.15/chat | sed 's/^/     /'
# publish_web FILE PATTERN WHAT: publishes FILE for host A and waits until
# its log has one more line matching PATTERN
log_count() { grep -c "$1" "$T/hosta.log"; }
log_more() { [[ $(log_count "$1") -gt $2 ]]; }
publish_web() {
	local n
	n=$(log_count "$2")
	in_agents "$CTL" publish "$1" --etcd "$EURL" --namespace shop >/dev/null || die "publish $3 failed"
	t_wait 20 log_more "$2" "$n" || die "host A's dmsc-l7 did not take $3 (see $T/hosta.log)"
}
# (decision 98) Affinity by header: a user's requests meet on one backend.
jq '(.services[] | select(.name == "web")) += {"affinity": {"header": "x-user"}}' \
	"$T/shopweb.json" >"$T/shopweb-aff.json"
publish_web "$T/shopweb-aff.json" 'replaced by' "web's affinity"
echo "   \"affinity\": {\"header\": \"x-user\"} on web: each user's streams on one backend, whichever"
echo "   connection or client carries them (users spread 80/20), 20 streams per user:"
for u in alice bob erin judy; do
	printf '     %-6s' "$u"
	dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 30 nghttp -H "x-user: $u" "${urls[@]:0:20}" |
		sort | uniq -c | tr '\n' ' ' | tr -s ' '
	echo
done
# (decision 85) A change of weights alone goes to the running helper.
nrep=$(log_count 'replaced by')
jq '(.services[] | select(.name == "web") | .backends) |= map(.weight = (if .labels.version == "v1" then 0 else 100 end))' \
	"$T/shopweb-aff.json" >"$T/shopweb2.json"
publish_web "$T/shopweb2.json" 'taken in place: the weights, timeouts' "web's weights"
echo "   web shifted to v2 (weights 0/100), published to etcd: a change of values alone, which"
echo "   host A's running dmsc-l7 takes in place (decision 85), every open connection kept:"
grep 'taken in place: the weights, timeouts' "$T/hosta.log" | tail -n 1 | sed 's/^/     /'
echo "     (dmsc-l7 hand-overs since: $(($(log_count 'replaced by') - nrep)))"
echo "   nghttp, 50 streams for /id again:"
dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 30 nghttp "${urls[@]}" |
	sort | uniq -c | sed 's/^/     /'

step "IPv6 http in the helper's own namespace: dmscd's host is the client's host too"
# (docs/design.md decision 51) The agents' namespace plays a plain host (a
# systemd service, no container): a process of the mesh cgroup there
# connects to an IPv6 http service. connect6 hands it to the helper's [::1]
# listener in that same namespace. web6h's only route sends everything to
# version v2 (weight 1 of 100): an answer from v1 would be a connection
# balanced at L4, without the helper.
dmsc_net_addr6 agents 2001:2:1::1/64 || die "agents' IPv6 address"
jq '.services += [{"name": "web6h", "vip": "2001:2:2::14", "port": 80, "protocol": "http",
                   "backends": [{"address": "2001:2:1::12", "port": 8080, "weight": 99, "labels": {"version": "v1"}},
                                {"address": "2001:2:1::13", "port": 8080, "weight": 1, "labels": {"version": "v2"}}],
                   "routes": [{"match": {"path_prefix": "/"}, "backends": {"version": "v2"}}]}]' \
	"$T/shopweb2.json" >"$T/shopweb6.json"
n=$(applied "$T/hosta.log")
in_agents "$CTL" publish "$T/shopweb6.json" --etcd "$EURL" --namespace shop >/dev/null || die "publish web6h failed"
t_wait 20 applied_more "$T/hosta.log" "$n" || die "host A did not apply web6h"
t_wait 20 grep -q "listening in the helper's own network namespace on \[::1\]" "$T/hosta.log" ||
	die "the helper does not listen on [::1] in its own namespace (see $T/hosta.log)"
grep -h "listening in the helper's own network namespace" "$T/hosta.log" | tail -n 1 | sed 's/^/   /'
v6h() { dmsc_run_in_cgroup "$CG" in_agents curl -6 -g -s --max-time 10 "$@"; }
v6h_routed() { [[ $(v6h http://[2001:2:2::14]/) == web6-v2 ]]; }
# (until the helper has the new policy: dmscd hands it over)
t_wait 20 v6h_routed || die "web6h was not routed by the helper"
urls=()
for ((i = 0; i < 20; i++)); do urls+=("http://[2001:2:2::14]/"); done
echo "   curl -6 from the agents' namespace, 20 requests to [2001:2:2::14]:80 (weights 99/1, route: all to v2):"
v6h "${urls[@]}" | sort | uniq -c | sed 's/^/     /'
echo "   (every one routed by the helper, on the host where it runs; at L4, 99 in 100 would be web6-v1)"

step "dmscd restarted: the next one adopts its helpers, connections open across it live on"
# (docs/design.md decision 86) A WebSocket through host A's dmsc-l7 goes
# idle for 12 s; host A's dmscd is stopped and started again meanwhile.
# The new dmscd runs the same binaries with the same options, so it
# adopts the helper that served on instead of starting one that the old
# one would drain for (10 s, then what is open is closed).
dmsc_run_in_cgroup "$CG" dmsc_net_exec client timeout 60 /usr/bin/python3 \
	"$TOP/tests/tools/ws-peer.py" client ws://198.19.0.15/chat --big 1024 --idle-ms 12000 \
	>"$T/ws-restart.out" 2>&1 &
WSPID=$!
ws_open() { dmsc_net_exec node1 ss -Htn state established "sport = :8444" | grep -q .; }
t_wait 10 ws_open || die "the WebSocket to chat did not open (see $T/ws-restart.out)"
l7pid=$(pgrep -f -- "--metrics-file /run/dmsc/dmsc-l7.$HOSTA.prom" | head -n 1)
echo "   a WebSocket to chat is open through dmsc-l7 (pid $l7pid); host A's dmscd stopped and started:"
kill -TERM "$HOSTA" && wait "$HOSTA" 2>/dev/null
hosta
t_wait 20 grep -q "dmsc-l7 (pid $l7pid) of the dmscd before adopted" "$T/hosta.log" ||
	die "host A's new dmscd did not adopt dmsc-l7 (see $T/hosta.log)"
grep -h -e "of the dmscd before adopted" -e "adopted by dmscd" "$T/hosta.log" | sed 's/^/     /'
wait "$WSPID" || die "the WebSocket across the restart failed: $(cat "$T/ws-restart.out")"
echo "   the WebSocket, idle across the restart, echoes 12 s later on the same connection:"
sed 's/^/     /' "$T/ws-restart.out"
kill -0 "$l7pid" && [[ -s /run/dmsc/dmsc-l7.$HOSTA.prom ]] ||
	die "dmsc-l7 $l7pid is gone or writes no metrics for the new dmscd"
echo "   (the same dmsc-l7, pid $l7pid, now writes the new dmscd's /run/dmsc/dmsc-l7.$HOSTA.prom;"
echo "    an upgrade, a new binary, is still handed over to a new helper)"
