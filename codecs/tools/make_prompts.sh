#!/bin/sh
# Regenerate the conference prompts in softswitch/media/prompts/ (needs espeak-ng and
# sox). 8 kHz mono mu-law WAV: what a G.711 call carries anyway, at 8 KB/s. Dithering
# is off (-D) so that re-running with the same tool versions does not churn the files.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
out="$here/softswitch/media/prompts"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

say() {
    # name, text
    espeak-ng -v en-us+f3 -s 160 -a 110 -w "$tmp/$1.wav" "$2"
    # Trim the silence espeak-ng puts around speech (keeping 50 ms), normalise to
    # -3 dBFS peak, then resample and encode.
    sox -D "$tmp/$1.wav" -c 1 -r 8000 -e u-law -b 8 "$out/$1.wav" \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse pad 0.05 0.05 norm -3
}

say enter_pin "Please enter the conference PIN, followed by the hash key."
say wrong_pin "That PIN is not valid. Please try again."
say muted "You are muted."
say unmuted "You are unmuted."

{
    espeak-ng --version | head -n 1
    sox --version
} > "$out/VERSIONS.txt"
