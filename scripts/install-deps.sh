#!/usr/bin/env bash
# Installs what rastro needs from Debian 12's archive.
#   install-deps.sh build                      build dependencies
#   install-deps.sh build --check-or-install   only if something is missing
#   install-deps.sh demo                       build + demo dependencies
#   install-deps.sh test                       build + test dependencies
set -euo pipefail

BUILD_PKGS=(make gcc clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev libyaml-dev
	libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev pkg-config)
TEST_PKGS=(bc python3 python3-pytest python3-yaml libmojolicious-perl nginx-light wrk curl
	prometheus libcap2-bin iproute2 libclang-rt-14-dev
	postgresql mariadb-server mariadb-client redis-server redis-tools libdbd-pg-perl
	libdbd-mariadb-perl libdbd-mysql-perl libredis-perl python3-psycopg2 python3-redis
	python3-grpcio python3-grpc-tools nghttp2-server nghttp2-client apache2 valgrind
	starman gunicorn strace
	docker-compose)

what=${1:-build}
mode=${2:-}

missing() {
	local p out=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
	done
	echo "${out[@]:-}"
}

DEMO_PKGS=(libmojolicious-perl curl python3 bc)

pkgs=("${BUILD_PKGS[@]}")
[ "$what" = demo ] && pkgs+=("${DEMO_PKGS[@]}")
[ "$what" = test ] && pkgs+=("${TEST_PKGS[@]}")
# Node.js may come from elsewhere (NodeSource ships npm inside nodejs, which
# conflicts with Debian's npm package): only ask Debian when it is missing.
if [ "$what" = test ] && ! command -v npm >/dev/null 2>&1; then
	pkgs+=(nodejs npm)
fi
need=$(missing "${pkgs[@]}")
[ -z "$need" ] && exit 0
if [ "$mode" = --check-only ]; then
	echo "rastro: missing Debian packages: $need" >&2
	exit 1
fi
if [ "$mode" = --check-or-install ] || [ "$mode" = "" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "rastro: missing Debian packages: $need" >&2
		echo "rastro: install them with: sudo apt-get install -y $need" >&2
		exit 1
	fi
	echo "rastro: installing Debian packages: $need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >&2
fi
