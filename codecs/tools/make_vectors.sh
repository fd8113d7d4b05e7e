#!/bin/sh
# Regenerate the speech vectors in codecs/vectors/ (needs espeak-ng and sox).
# Output is deterministic for a given espeak-ng/sox version: dithering is disabled (-D)
# so re-running does not churn the files.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/vectors"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

text="The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. \
It is easy to tell the depth of a well."

# A female variant scores higher with PESQ than the default male voice.
espeak-ng -v en-us+f3 -s 165 -a 120 -w "$tmp/speech.wav" "$text"

# Trim to 5 s, then resample with sox's default (high quality) rate converter.
sox -D "$tmp/speech.wav" -b 16 -c 1 -r 8000 "$out/speech_8k.wav" trim 0 5.0
sox -D "$tmp/speech.wav" -b 16 -c 1 -r 16000 "$out/speech_16k.wav" trim 0 5.0

espeak-ng --version | head -n 1 > "$out/VERSIONS.txt"
sox --version >> "$out/VERSIONS.txt"
