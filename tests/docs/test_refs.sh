#!/usr/bin/env bash
# Every reference resolves inside the repository:
#   - code, scripts and tests cite no DESIGN.md (it is not in the repository:
#     the design is docs/design.md);
#   - every docs/X.md that a file names exists;
#   - every "docs/design.md decision N" names a decision that design.md has
#     (a heading "### N. ...");
#   - every repository path that README.md, docs/ or a code comment names
#     (bpf/..., include/..., user/..., scripts/..., tests/..., policies/...,
#     docs/... with a file extension) exists;
#   - every relative link of README.md and docs/*.md resolves, anchors
#     included (GitHub's heading slugs).
# docs/pending/ (text written beside code changes, not merged yet) is left
# out. No root needed. Prints "N passed, M failed" last.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/tests/lib/assert.sh"
cd "$TOP" || exit 1

# The files to read: tracked ones when this is a git checkout.
if git rev-parse --git-dir >/dev/null 2>&1; then
	mapfile -t FILES < <(git ls-files -co --exclude-standard | grep -v '^docs/pending/' |
		while read -r f; do [[ -f $f ]] && echo "$f"; done)
else
	mapfile -t FILES < <(find . -path ./build -prune -o -path ./build-asan -prune -o \
		-path ./build-fuzz -prune -o -path ./.git -prune -o -path ./docs/pending -prune -o \
		-type f -print | sed 's|^\./||')
fi
CODE=() DOCS=()
for f in "${FILES[@]}"; do
	case $f in
	README.md | docs/*.md) DOCS+=("$f") ;;
	tests/fuzz/corpus/* | tests/fuzz/regressions/*) ;; # inputs, not text
	tests/docs/test_refs.sh) ;;                        # names the patterns it checks
	*.c | *.h | *.sh | *.awk | *.dict | *.service | *.supp | Makefile | .ci/* | tests/*/README.md)
		CODE+=("$f") ;;
	esac
done
t_check "found the code (${#CODE[@]} files) and the docs (${#DOCS[@]} pages)" \
	test "${#CODE[@]}" -gt 10 -a "${#DOCS[@]}" -gt 3

# 1. No DESIGN.md in code.
hits=$(grep -nE 'DESIGN(\.md| decision)' "${CODE[@]}" /dev/null)
t_eq "no code cites DESIGN.md (the design is docs/design.md)" "$hits" ""

# 2. docs/X.md named anywhere exist.
missing=""
while IFS=: read -r f page; do
	[[ -f $page ]] || missing+="$f: $page"$'\n'
done < <(grep -oE 'docs/[A-Za-z0-9_./-]+\.md' "${CODE[@]}" "${DOCS[@]}" /dev/null | sort -u)
t_eq "every docs/X.md named in code and docs exists" "$missing" ""

# 3. "docs/design.md decision N" names a decision of design.md, also when
#    the citation is wrapped over two comment lines.
decisions=$(sed -nE 's/^### ([0-9]+)\. .*/\1/p' docs/design.md | tr '\n' ' ')
first_13() { [[ " $decisions" == " 1 2 3 4 5 6 7 8 9 10 11 12 13 "* ]]; }
t_check "docs/design.md has numbered decisions 1-13 ($decisions)" first_13
missing=""
n=0
while IFS=: read -r f num; do
	n=$((n + 1))
	grep -qE "^### $num\. " docs/design.md || missing+="$f: decision $num"$'\n'
done < <(perl -0ne 'while (m{docs/design\.md,?(?:[\s*#/]|//)*decision\s+(\d+)}g) { print "$ARGV:$1\n" }' \
	"${CODE[@]}" "${DOCS[@]}" | sort -u)
t_eq "every cited design decision exists ($n citations)" "$missing" ""

# 4. Repository paths named in docs and code exist. A name with an
#    upper-case placeholder (fuzz_NAME.c) is a pattern, not a path.
missing=""
n=0
while IFS=: read -r f path; do
	[[ $path =~ [A-Z]{2,}[^/]*$ && ! -e $path ]] && continue
	n=$((n + 1))
	[[ -e $path ]] || missing+="$f: $path"$'\n'
done < <(perl -ne 'next if /#\s*include\s*</; # system headers: <bpf/libbpf.h>
	while (m{(?<![A-Za-z0-9_./-])((?:bpf|include|user|scripts|tests|policies|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.(?:c|h|sh|md|json|awk|service|dict|supp))\b}g) {
		print "$ARGV:$1\n" }' "${CODE[@]}" "${DOCS[@]}" | sort -u)
t_eq "every repository path named in docs and code exists ($n names)" "$missing" ""

# 5. Relative links of the docs, and their anchors.
# slugs FILE: GitHub's anchor of each heading of FILE.
slugs() {
	sed -nE 's/^#{1,6} +(.*)$/\1/p' "$1" | tr '[:upper:]' '[:lower:]' |
		sed -E 's/`//g; s/[^a-z0-9 _-]//g; s/ /-/g'
}
missing=""
n=0
for f in "${DOCS[@]}"; do
	dir=$(dirname "$f")
	while read -r link; do
		n=$((n + 1))
		target=${link%%#*} anchor=""
		[[ $link == *#* ]] && anchor=${link#*#}
		if [[ -z $target ]]; then
			path=$f
		else
			path=$dir/$target
		fi
		if [[ ! -e $path ]]; then
			missing+="$f: $link (no $path)"$'\n'
		elif [[ -n $anchor && $path == *.md ]] && ! slugs "$path" | grep -qxF -- "$anchor"; then
			missing+="$f: $link (no heading #$anchor in $path)"$'\n'
		fi
	done < <(grep -oE '\]\([^)[:space:]]+\)' "$f" | sed -E 's/^\]\((.*)\)$/\1/' |
		grep -vE '^(https?|mailto|ftp):')
done
t_eq "every relative link of README.md and docs/ resolves ($n links)" "$missing" ""

t_summary
