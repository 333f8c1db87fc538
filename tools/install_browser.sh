#!/usr/bin/env bash
# Installs what the browser tests of the web view need (tests/test_view_browser.py): Debian's `chromium` and
# `chromium-driver`, with apt, when they are absent and this runs as root with apt. Never fails the caller:
# without a browser those tests skip and say why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no chromium/chromedriver and no root apt-get here: the browser tests will skip" >&2
  exit 0
fi
echo "install_browser: installing chromium and chromium-driver (browser tests of the web view)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "install_browser: apt-get could not install chromium: the browser tests will skip" >&2
fi
exit 0
