#!/usr/bin/env bash
# Set up everything refmount needs on a Debian machine (FUSE, a virtualenv), then run:
#   scripts/dev.sh demo            mount the embedded demo, read it with xarray, unmount
#   scripts/dev.sh test [ARGS]     the whole test suite (pytest ARGS)
#   scripts/dev.sh bench [ARGS]    the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-}"
extras=test
apt_packages=()
command -v fusermount3 >/dev/null 2>&1 || apt_packages+=(fuse3)
command -v getfattr >/dev/null 2>&1 || apt_packages+=(attr)
command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
# legacy C clients read through the decoded view: the demo shows ncdump, the tests run both
if [ "$what" = demo ] || [ "$what" = test ]; then
    command -v ncdump >/dev/null 2>&1 || apt_packages+=(netcdf-bin)
fi
if [ "$what" = test ]; then
    command -v gdal_translate >/dev/null 2>&1 || apt_packages+=(gdal-bin)
    command -v rsync >/dev/null 2>&1 || apt_packages+=(rsync)  # a client that walks in text order
fi
if [ "$what" = bench ]; then  # the fsspec FUSE baseline runs on fusepy, which needs libfuse2
    extras=bench
    ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || apt_packages+=(libfuse2)
fi
if ((${#apt_packages[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing ${apt_packages[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "refmount needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
    exit 1
}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.refmount-installed
want="$extras $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
    echo "$want" >"$stamp"
fi

[ $# -gt 0 ] && shift
case "$what" in
    demo) exec .venv/bin/refmount demo "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    bench) exec .venv/bin/python benchmarks/run.py "$@" ;;
    *) echo "usage: scripts/dev.sh demo | test [pytest args] | bench [args]" >&2; exit 2 ;;
esac
