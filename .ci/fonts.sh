#!/usr/bin/env bash
# Installs (apt) the font greenlight-sim draws plot text with (DejaVu Sans,
# read at run time by plotters' ab_glyph renderer; no font library needed).
# Idempotent. Usage: bash .ci/fonts.sh
set -euo pipefail
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$font" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "$font is missing and this is not root: apt-get install fonts-dejavu-core" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >&2
fi
echo "$font"
