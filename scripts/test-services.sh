#!/usr/bin/env bash
# What the test suites need besides Node, provisioned before `npm test` (its pretest step), once:
# every step checks first and does nothing when the thing is already there.
# - Debian packages: SoftHSM2 (the PKCS#11 KEK provider), D-Bus and gnome-keyring (a real Secret
#   Service for the OS keyring provider), Chromium (the dashboard's browser test drives
#   /usr/bin/chromium), redis-server (the *.redis.test.ts suites), python3-numpy and python3-torch
#   for /usr/bin/python3 (the external-trainer tests and examples). Installed with apt-get as root,
#   or through sudo; without either, the missing ones are named with the command to install them.
# - A SoftHSM2 token labelled "aegis" (the one the README's `--kek pkcs11` example uses; the tests
#   make their own tokens in temp dirs).
# - A Redis on 127.0.0.1:6379 (AEGIS_REDIS_URL points elsewhere): started from redis-server when
#   none answers, with its data in a temp dir.
# AEGIS_SKIP_TEST_SERVICES=1 skips all of it (a machine provisioned another way).
set -euo pipefail
[ "${AEGIS_SKIP_TEST_SERVICES:-}" = 1 ] && exit 0
need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v dbus-daemon >/dev/null || need+=(dbus)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
[ -x /usr/bin/chromium ] || need+=(chromium)
/usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
/usr/bin/python3 -c 'import torch' 2>/dev/null || need+=(python3-torch)
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
redis_up || command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    echo "the test suites need: ${need[*]}; install them with: sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
    exit 2
  fi
  echo "installing what the test suites need: ${need[*]}" >&2
  "${SUDO[@]}" apt-get install -y --no-install-recommends "${need[@]}" >/dev/null || { "${SUDO[@]}" apt-get update >/dev/null && "${SUDO[@]}" apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
if ! softhsm2-util --show-slots 2>/dev/null | grep -q 'Label:\s*aegis\s*$'; then
  softhsm2-util --init-token --free --label aegis --pin "${AEGIS_PKCS11_PIN:-1234}" --so-pin "${AEGIS_PKCS11_SO_PIN:-123456}" >/dev/null || true
fi
if [ -z "${AEGIS_REDIS_URL:-}" ] && ! redis_up; then
  redis_dir="$(mktemp -d)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --appendonly yes --dir "$redis_dir" --logfile "$redis_dir/redis.log" >/dev/null
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis-server did not start (see $redis_dir/redis.log)" >&2; exit 1; }
fi
