#!/usr/bin/env bash
# Regenerates the voice prompts in prompts/ from prompts/prompts.txt.
#
# Each `NAME: TEXT` line of the list becomes prompts/NAME.wav: TEXT spoken by espeak-ng (voice
# en-us, 150 words a minute), then converted by sox to 8000 Hz mono 16-bit signed PCM, with
# the leading and trailing silence trimmed down to 50 ms at each end and the peak normalised
# to -3 dBFS. prompts/hold-music.wav is not in the list: it is 30 s of slow plucked chords
# synthesised with sox (8000 Hz mono 16-bit, peak -6 dBFS), faded at both ends so it loops
# without a click. Plucked strings are rich in harmonics, so the music is a fair DTMF talk-off
# test signal. WAV files whose name is no longer in the list are removed.
#
# Needs only the Debian packages espeak-ng and sox. Runs from any directory. The output is the
# same on every run with the same tool versions (sox runs in repeatable mode, -R, and without
# dither, -D).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/prompts"
list="$dir/prompts.txt"

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
if [ ${#missing[@]} -gt 0 ]; then
  echo "prompts.sh: ${missing[*]} not found; install with: apt-get install espeak-ng sox" >&2
  exit 1
fi
if [ ! -f "$list" ]; then
  echo "prompts.sh: $list not found" >&2
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/callbackd-prompts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "prompts.sh: $*" >&2
  exit 1
}

# Read the whole list first, so that a bad line changes nothing.
names=()
texts=()
declare -A listed=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
  if [[ $line =~ ^[[:space:]]*([A-Za-z0-9-]+):[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
    name=${BASH_REMATCH[1]}
    text=${BASH_REMATCH[2]}
  else
    fail "prompts/prompts.txt:$lineno: expected 'NAME: TEXT' (NAME of letters, digits and dashes): $line"
  fi
  [ "$name" != hold-music ] || fail "prompts/prompts.txt:$lineno: hold-music is made by this script, not spoken"
  [ -z "${listed[$name]:-}" ] || fail "prompts/prompts.txt:$lineno: $name is listed twice"
  listed[$name]=1
  names+=("$name")
  texts+=("$text")
done <"$list"

count=0
total=0
report() { # FILE: prints one line about a file made, and counts it
  local file=$1 bytes seconds
  bytes=$(stat -c %s "$file")
  seconds=$(sox --i -D "$file")
  printf '%-36s %6.2f s %8d bytes\n' "prompts/${file##*/}" "$seconds" "$bytes"
  count=$((count + 1))
  total=$((total + bytes))
}

out_format=(-r 8000 -c 1 -b 16 -e signed-integer)

for i in "${!names[@]}"; do
  name=${names[$i]}
  printf '%s\n' "${texts[$i]}" >"$tmp/text"
  espeak-ng -v en-us -s 150 -f "$tmp/text" -w "$tmp/speech.wav"
  # Trim silence below -55 dBFS from the start, then (reversed) from the end; resample; pad
  # 50 ms of silence at each end; normalise the peak to -3 dBFS.
  sox -R -D "$tmp/speech.wav" "${out_format[@]}" "$tmp/prompt.wav" \
    silence 1 0.01 -55d reverse silence 1 0.01 -55d reverse \
    rate -v 8000 pad 0.05 0.05 gain -n -3
  mv "$tmp/prompt.wav" "$dir/$name.wav"
  report "$dir/$name.wav"
done

# Hold music: I-vi-IV-V in C twice (the second time ending on G7, which leads back to C at
# the loop point), one chord every 3.75 s, each chord four plucked notes struck 0.3 s apart.
# Each chord fades out at its end; the whole fades in over 20 ms and out over the last 1.5 s,
# so the loop point is silent on both sides.
chords=(
  "C3 G3 C4 E4" "A2 A3 C4 E4" "F2 A3 C4 F4" "G2 B3 D4 G4"
  "C3 G3 E4 G4" "A2 A3 E4 A4" "F2 F3 C4 A4" "G2 B3 D4 F4"
)
chord_seconds=3.75
parts=()
for i in "${!chords[@]}"; do
  read -ra notes <<<"${chords[$i]}"
  synth=()
  for note in "${notes[@]}"; do
    synth+=(pluck "$note")
  done
  sox -R -D -r 48000 -c 4 -n -e floating-point -b 32 -c 1 "$tmp/chord$i.wav" \
    synth "$chord_seconds" "${synth[@]}" delay 0 0.3 0.6 0.9 remix - \
    trim 0 "$chord_seconds" fade h 0.005 "$chord_seconds" 0.4
  parts+=("$tmp/chord$i.wav")
done
sox -R -D "${parts[@]}" "${out_format[@]}" "$tmp/hold-music.wav" \
  lowpass 3200 rate -v 8000 fade h 0.02 30 1.5 gain -n -6
mv "$tmp/hold-music.wav" "$dir/hold-music.wav"
report "$dir/hold-music.wav"

# The directory mirrors the list: remove prompts no longer in it.
shopt -s nullglob
for file in "$dir"/*.wav; do
  name=${file##*/}
  name=${name%.wav}
  if [ "$name" != hold-music ] && [ -z "${listed[$name]:-}" ]; then
    rm -f -- "$file"
    echo "removed prompts/$name.wav (not in prompts/prompts.txt)"
  fi
done

awk -v n="$count" -v b="$total" \
  'BEGIN { printf "%d files, %d bytes (%.1f MB) in total\n", n, b, b / 1048576 }'
