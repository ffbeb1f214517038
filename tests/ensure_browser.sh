#!/usr/bin/env bash
# Install headless Chromium + ChromeDriver (Debian packages) for tests/test_browser.py.
# Idempotent: does nothing when both are already there. Needs root (as on CI here).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_browser: chromium is missing and this user cannot apt-get install it" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
