#!/bin/sh
# Debian's chromium for the console's browser tests (tests/browser/: Playwright drives
# it as executable_path — Playwright's own browser download is never used). Installed
# with apt-get when missing; the suite fails (never skips) without it.
set -e
command -v chromium >/dev/null 2>&1 && exit 0
apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }
command -v chromium >/dev/null 2>&1 || { echo "chromium could not be installed" >&2; exit 1; }
