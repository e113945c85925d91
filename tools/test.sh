#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing, then runs them.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: PortAudio and a JACK server for the real-audio tests.
missing=()
command -v jackd >/dev/null 2>&1 || missing+=(jackd2)
command -v pd >/dev/null 2>&1 || missing+=(puredata-core)
ldconfig -p 2>/dev/null | grep -q 'libportaudio.so.2' || missing+=(libportaudio2)
ldconfig -p 2>/dev/null | grep -q 'libjack.so.0' || missing+=(libjack-jackd2-0)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q -c tools/constraints.txt -e '.[test]'
exec python3 -m pytest -q "$@"
