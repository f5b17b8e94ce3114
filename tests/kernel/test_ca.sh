#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# test_ca.sh: `dmscctl ca init / issue / show` judged by OpenSSL's own
# command-line tool: `openssl verify` accepts a host certificate under its
# CA and refuses it under another CA, `openssl x509 -text` shows the
# identity, the key type and the extensions a peer checks. No BPF, no root.
#
# Prints "ok - ..." / "not ok - ..." per check, then "N passed, M failed".
# Exit: 0 all passed, 1 a check failed, 77 skipped (openssl missing).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/assert.sh
source "$root/tests/lib/assert.sh"

for cmd in openssl jq; do
	if ! command -v "$cmd" >/dev/null; then
		echo "skip - $cmd is missing"
		exit 77
	fi
done
ctl=$root/build/dmscctl
make -s -C "$root" build/dmscctl >&2 || {
	t_fail "build dmscctl"
	t_summary
	exit 1
}

work=$(mktemp -d /tmp/dmsc-test-ca.XXXXXX)
trap 'rm -rf "$work"' EXIT

mode() { stat -c %a "$1"; }

"$ctl" ca init "$work/ca" --trust-domain mesh.test --days 7 >/dev/null
t_eq "ca init exits 0" "$?" 0
t_eq "ca.key is 0600" "$(mode "$work/ca/ca.key")" 600
out=$("$ctl" ca issue "$work/ca" --host node-a --out "$work/a" --hours 3 -o json)
t_eq "ca issue exits 0" "$?" 0
t_eq "ca issue -o json: the identity" "$(jq -r .id <<<"$out")" "spiffe://mesh.test/host/node-a"
t_eq "ca issue -o json: valid" "$(jq -r .valid <<<"$out")" true
t_eq "host.key is 0600" "$(mode "$work/a/host.key")" 600
t_eq "HOSTDIR holds ca.crt, host.crt, host.key" "$(cd "$work/a" && echo *)" \
	"ca.crt host.crt host.key"

t_check "openssl verify accepts host.crt under ca.crt" \
	bash -c "openssl verify -CAfile '$work/a/ca.crt' -purpose sslclient '$work/a/host.crt' >/dev/null"
t_check "openssl verify accepts it as a server too" \
	bash -c "openssl verify -CAfile '$work/a/ca.crt' -purpose sslserver '$work/a/host.crt' >/dev/null"
text=$(openssl x509 -in "$work/a/host.crt" -noout -text)
t_check "x509 -text: the URI SAN" grep -q "URI:spiffe://mesh.test/host/node-a" <<<"$text"
t_check "x509 -text: ECDSA P-256" grep -q "NIST CURVE: P-256" <<<"$text"
t_check "x509 -text: not a CA" grep -q "CA:FALSE" <<<"$text"
t_check "x509 -text: client and server auth" \
	grep -q "TLS Web Server Authentication, TLS Web Client Authentication" <<<"$text"
t_check "x509 -text: signed with ecdsa-with-SHA256" grep -q "ecdsa-with-SHA256" <<<"$text"
end=$(openssl x509 -in "$work/a/host.crt" -noout -enddate | cut -d= -f2)
left=$(($(date -d "$end" +%s) - $(date +%s)))
t_range "valid for 3 hours (--hours 3)" "$left" $((3 * 3600 - 60)) $((3 * 3600))
t_check "openssl: host.key is the key of host.crt" \
	test "$(openssl pkey -in "$work/a/host.key" -pubout)" = \
	"$(openssl x509 -in "$work/a/host.crt" -noout -pubkey)"
catext=$(openssl x509 -in "$work/ca/ca.crt" -noout -text)
t_check "ca.crt: a CA, path length 0" grep -q "CA:TRUE, pathlen:0" <<<"$catext"
t_check "ca.crt: URI SAN of the trust domain" grep -q "URI:spiffe://mesh.test$" <<<"$catext"

# another CA of the same trust domain: openssl and dmscctl refuse its host
"$ctl" ca init "$work/other" --trust-domain mesh.test >/dev/null
"$ctl" ca issue "$work/other" --host node-x --out "$work/x" >/dev/null
t_check "openssl verify refuses a host of another CA" \
	bash -c "! openssl verify -CAfile '$work/a/ca.crt' '$work/x/host.crt' 2>/dev/null"
cp "$work/a/ca.crt" "$work/x/ca.crt"
err=$("$ctl" ca show "$work/x" 2>&1)
t_eq "ca show refuses it (exit 1)" "$?" 1
t_check "ca show says why: $err" grep -q "unable to get local issuer certificate" <<<"$err"
t_eq "ca show -o json: valid false" \
	"$("$ctl" ca show "$work/x" -o json 2>/dev/null | jq -r .valid)" false

# refusals with their reasons
err=$("$ctl" ca init "$work/ca" --trust-domain mesh.test 2>&1)
t_eq "ca init on an existing CA exits 1" "$?" 1
t_check "it says the key exists" grep -q "ca.key exists" <<<"$err"
err=$("$ctl" ca issue "$work/ca" --host node-b --out "$work/b" --days 8 2>&1)
t_eq "a host certificate past the CA's end exits 1" "$?" 1
t_check "it says so" grep -q "would outlive the CA" <<<"$err"
"$ctl" ca issue "$work/ca" --host "Node B" --out "$work/b" >/dev/null 2>&1
t_eq "a bad host name is refused (exit 1)" "$?" 1
"$ctl" ca issue "$work/ca" --out "$work/b" >/dev/null 2>&1
t_eq "issue without --host is a usage error (exit 2)" "$?" 2
t_check "nothing was written for the refused hosts" test ! -e "$work/b/host.key"

t_summary
