#!/usr/bin/env bash
# Installs the Debian packages the tests start as real servers (redis-server, haproxy) when missing.
# Usage: scripts/system-packages.sh COMMAND=PACKAGE...  (e.g. redis-server=redis-server haproxy=haproxy)
# Already installed: nothing happens (fast). No apt-get on this machine: a clear message, exit 0, and the
# tests that need the command skip with that message. apt-get present but the install fails: exit 1.
set -uo pipefail

missing=()
for pair in "$@"; do
    command_name="${pair%%=*}"
    package="${pair#*=}"
    if ! command -v "$command_name" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command_name" ]; then
        missing+=("$package")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "loopwire: ${missing[*]} not installed and apt-get is not available here; install them with your" \
        "package manager. The tests that need them are skipped." >&2
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -n)
    else
        echo "loopwire: ${missing[*]} must be installed (apt-get install -y ${missing[*]}), but this user" \
            "is not root and has no sudo." >&2
        exit 1
    fi
fi

echo "loopwire: installing ${missing[*]} (Debian packages) for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
# A package's post-install must not start a system-wide daemon on the default port: the tests start their own.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ] && [ "${#as_root[@]}" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
fi
install() { "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; }
install || { "${as_root[@]}" apt-get update && install; }
status=$?
[ "$added_policy" -eq 1 ] && rm -f "$policy"
if [ "$status" -ne 0 ]; then
    echo "loopwire: FAILED to install ${missing[*]} with apt-get (exit $status); the Redis and HAProxy" \
        "tests need them." >&2
    exit 1
fi
