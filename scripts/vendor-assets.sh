#!/usr/bin/env bash
# Refreshes the dashboard's front-end library from the npm registry: uPlot's built files and
# licence go to api/assets/vendor/, which is committed and embedded in the binary, so neither
# the build nor the running dashboard needs npm or a CDN. Bump VERSION to upgrade.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-1.6.32}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
DEST=api/assets/vendor
mkdir -p "$DEST"
cp "$WORK/package/dist/uPlot.iife.min.js" "$WORK/package/dist/uPlot.min.css" "$DEST/"
cp "$WORK/package/LICENSE" "$DEST/uPlot.LICENSE"
echo "uPlot $VERSION vendored into $DEST"
