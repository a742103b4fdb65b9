#!/bin/sh
# Alignment speed: ab::align_ctc against a Python/PyTorch full trellis-and-backtrack aligner on the
# same seeded emissions; checks both find the same path and prints the speed ratio.
# Usage: bench/align_speed.sh [FRAMES] [TOKENS]   (defaults 15000 frames = 5 min at 20 ms, 3000 tokens)
# Needs /usr/bin/python3 with torch and numpy (Debian's python3-torch) and a C++17 compiler. Each side
# reports its best of 3 runs; the Python trellis alone takes FRAMES x (2 TOKENS + 1) x 4 bytes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
frames=${1:-15000}
tokens=${2:-3000}
work=$(mktemp -d "${TMPDIR:-/tmp}/ab-align-speed.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The driver is built straight from the aligner's source with the Release flags CMake uses, so the
# benchmark does not depend on the rest of the tree building.
c++ -std=c++17 -O3 -DNDEBUG -I"$root" -o "$work/align_speed" "$here/align_speed.cpp" "$root/worker/ctc_aligner.cpp"

/usr/bin/python3 "$here/align_speed.py" gen "$work" --frames "$frames" --tokens "$tokens" --labels 32 --seed 1
# Exact: the whole (2-bit) trellis. Banded: the worker's defaults (a 512-state band that follows the
# best partial path and widens when the path runs along its edge), under the default 256 MiB cap.
"$work/align_speed" "$work" exact 256
"$work/align_speed" "$work" banded 256
/usr/bin/python3 "$here/align_speed.py" align "$work"
/usr/bin/python3 "$here/align_speed.py" compare "$work"
