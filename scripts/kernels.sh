# shellcheck shell=bash
# kernels.sh: the kernel matrix, one row per kernel. Source it.
#   NAME   Debian suites to take linux-image-amd64 from (comma-separated)
# The matrix is every row plus the running kernel ("host").
DMSC_KERNEL_NAMES=(5.10 6.1 6.12)

dmsc_kernel_suites() {
	case $1 in
	5.10) echo bullseye,bullseye-security ;; # oldest supported (docs/design.md decision 8)
	6.1) echo bookworm,bookworm-security ;;
	6.12) echo bookworm-backports ;;
	*)
		echo "kernels.sh: no kernel named \"$1\" (known: ${DMSC_KERNEL_NAMES[*]})" >&2
		return 1
		;;
	esac
}

dmsc_kernel_cache() {
	echo "${DMSC_KERNEL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/dmsc-kernels}"
}
