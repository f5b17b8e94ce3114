#!/usr/bin/awk -f
# promcheck.awk: a strict check of the Prometheus text exposition format
# (version 0.0.4), stricter than Prometheus itself where dmsc promises more:
#   - every line is "# HELP name text", "# TYPE name type" or a sample; no
#     blank lines, no other comments
#   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
#     [a-zA-Z_][a-zA-Z0-9_]* (not __*), label values are quoted with only
#     \\, \" and \n as escapes, no label twice in a sample
#   - values are floats (Inf, NaN allowed), an optional integer timestamp
#   - every sample belongs to a family declared by TYPE before it, the
#     samples of a family are adjacent, HELP and TYPE at most once per name
#   - a counter's name ends in _total and its values are >= 0
#   - a histogram has _bucket samples with le, cumulative and ending with
#     le="+Inf" equal to _count, plus _sum and _count, per label set
#   - no series (name and label set) appears twice
# Prints every problem as "LINE: problem" and exits 1 if there was one.
function fail(msg) { printf "%d: %s: %s\n", NR, msg, $0; bad++ }
function is_float(v) {
	return v ~ /^[+-]?(Inf|NaN|[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?)$/
}
# Parses a label set "{...}" starting at s; sets LABELS (canonical text),
# LE (the le label or ""), REST (what follows the "}"). Returns 1 if valid.
function parse_labels(s,    i, c, name, val, n, seen, esc, out) {
	LABELS = ""; LE = ""; REST = ""
	if (substr(s, 1, 1) != "{") { REST = s; return 1 }
	i = 2; n = 0; split("", seen)
	while (1) {
		if (substr(s, i, 1) == "}") { i++; break }
		if (n > 0) {
			if (substr(s, i, 1) != ",") return 0
			i++
			if (substr(s, i, 1) == "}") { i++; break } # trailing comma is allowed
		}
		name = ""
		while ((c = substr(s, i, 1)) ~ /[a-zA-Z0-9_]/ && c != "") { name = name c; i++ }
		if (name !~ /^[a-zA-Z_][a-zA-Z0-9_]*$/ || name ~ /^__/) return 0
		if (name in seen) return 0
		seen[name] = 1
		if (substr(s, i, 2) != "=\"") return 0
		i += 2; val = ""
		while (1) {
			c = substr(s, i, 1)
			if (c == "") return 0
			if (c == "\\") {
				esc = substr(s, i + 1, 1)
				if (esc != "\\" && esc != "\"" && esc != "n") return 0
				val = val c esc; i += 2; continue
			}
			if (c == "\"") { i++; break }
			val = val c; i++
		}
		if (name == "le") LE = val
		else out = out name "=" val "\001"
		n++
	}
	LABELS = out
	REST = substr(s, i)
	return 1
}
BEGIN { bad = 0; cur = "" }
/^$/ { fail("blank line"); next }
/^#/ {
	if ($0 ~ /^# HELP /) {
		name = $3
		if (name !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*$/) fail("bad metric name in HELP")
		if (name in help) fail("second HELP for " name)
		help[name] = 1
		if ($0 ~ /\\[^\\n]/) fail("HELP text escapes only \\\\ and \\n")
		next
	}
	if ($0 ~ /^# TYPE /) {
		name = $3
		if (NF != 4) { fail("TYPE takes a name and a type"); next }
		if (name !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*$/) fail("bad metric name in TYPE")
		if ($4 !~ /^(counter|gauge|histogram|summary|untyped)$/) fail("unknown type " $4)
		if (name in type) fail("second TYPE for " name)
		if (name in done) fail("TYPE for " name " after its samples")
		if ($4 == "counter" && name !~ /_total$/) fail("counter " name " does not end in _total")
		type[name] = $4
		if (cur != "") done[cur] = 1
		cur = name
		next
	}
	fail("comment other than HELP or TYPE")
	next
}
{
	line = $0
	if (!match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*/)) { fail("bad metric name"); next }
	sname = substr(line, 1, RLENGTH)
	if (!parse_labels(substr(line, RLENGTH + 1))) { fail("bad label set"); next }
	rest = REST
	if (rest !~ /^ [^ ]+( -?[0-9]+)?$/) { fail("expected \" VALUE [TIMESTAMP]\""); next }
	split(substr(rest, 2), parts, " ")
	value = parts[1]
	if (!is_float(value)) { fail("value " value " is not a float"); next }
	fam = sname; suffix = ""
	if (!(fam in type) && sname ~ /_(bucket|sum|count)$/) {
		fam = sname; sub(/_(bucket|sum|count)$/, "", fam)
		suffix = substr(sname, length(fam) + 1)
	}
	if (!(fam in type)) { fail("sample of " sname " without a TYPE before it"); next }
	if (fam != cur) { fail("sample of " fam " outside its family's block"); next }
	t = type[fam]
	if (suffix != "" && t != "histogram" && t != "summary") { fail(sname " is not in a histogram"); next }
	if (t == "histogram" && suffix == "") { fail("histogram sample " sname " without _bucket/_sum/_count"); next }
	if (LE != "" && suffix != "_bucket") { fail("le label outside a _bucket sample") }
	key = sname "\002" LABELS "\002" LE
	if (key in series) fail("series appears twice")
	series[key] = 1
	if (t == "counter" && (value ~ /^-/ || value == "NaN")) fail("counter value below 0")
	if (suffix == "_bucket") {
		if (LE == "") { fail("_bucket without le"); next }
		if (LE != "+Inf" && !is_float(LE)) { fail("le " LE " is not a float"); next }
		hk = fam "\002" LABELS
		if ((hk in lastb) && value + 0 < lastb[hk]) fail("buckets not cumulative")
		if ((hk in lastle) && LE != "+Inf" && lastle[hk] != "+Inf" && LE + 0 <= lastle[hk] + 0) fail("le not increasing")
		if ((hk in lastle) && lastle[hk] == "+Inf") fail("bucket after le=\"+Inf\"")
		lastb[hk] = value + 0; lastle[hk] = LE
		if (LE == "+Inf") inf[hk] = value + 0
		hists[hk] = 1
	}
	if (suffix == "_count" && t == "histogram") count[fam "\002" LABELS] = value + 0
	if (suffix == "_sum" && t == "histogram") sum[fam "\002" LABELS] = 1
}
END {
	for (hk in hists) {
		split(hk, p, "\002")
		if (!(hk in inf)) { printf "end: histogram %s has no le=\"+Inf\" bucket\n", p[1]; bad++ }
		else if (!(hk in count) || count[hk] != inf[hk]) { printf "end: histogram %s: _count differs from the +Inf bucket\n", p[1]; bad++ }
		if (!(hk in sum)) { printf "end: histogram %s has no _sum\n", p[1]; bad++ }
	}
	if (NR == 0) { print "end: empty exposition"; bad++ }
	exit bad ? 1 : 0
}
