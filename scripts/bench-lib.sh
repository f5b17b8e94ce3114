# shellcheck shell=bash
# Helpers shared by the benchmarks that measure a proxy's processes.

# cpu_ticks PID: user+system clock ticks of PID and its children (nginx's
# workers); divide by `getconf CLK_TCK`.
cpu_ticks() {
	local total=0 p f
	for p in "$1" $(pgrep -P "$1"); do
		f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
		total=$((total + ${f% *} + ${f#* }))
	done
	echo "$total"
}

# rss_kb PID: resident kB of PID and its children
rss_kb() {
	local total=0 p v
	for p in "$1" $(pgrep -P "$1"); do
		v=$(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# to_ms "1.23ms" | "456.00us" | "1.02s": wrk's durations in milliseconds
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
		else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
		else print "nan" }'
}
