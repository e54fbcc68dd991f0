#!/usr/bin/env bash
# Packs, under .carry/, what benchmarks/gpu_check.sh needs on a GPU machine that has no
# package index and receives at most 64 MiB a call, working tree included: the Python
# packages its image lacks (benchmarks/gpu_packages.py) as Python 3.12 wheels, and the
# prepared data (data/*) as a gzipped tar cut into pieces that fit beside the tree.
# Prints the calls to make, in order (docs/gpu.md).
#
#   bash benchmarks/gpu_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .carry
mkdir -p .carry/wheels
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python benchmarks/gpu_packages.py >.carry/packages.txt
while read -r spec; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .carry/wheels "$spec" 2>/dev/null ||
    python -m pip wheel -q --no-deps -w .carry/wheels "$spec"  # pure Python, published as source only
done <.carry/packages.txt

# the data, with a digest of every file to check it by after the journey
find data -type f | sort | xargs md5sum >.carry/data.md5
tree_mib=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print int(s / 1048576) + 1}')
piece_mib=$((64 - tree_mib - 4))
tar -cz data .carry/data.md5 | split -b "${piece_mib}M" -d - .carry/data.tgz.
pieces=(.carry/data.tgz.*)
wheels_mib=$(du -sm .carry/wheels | cut -f1)

cat <<EOF
Packed: $(ls .carry/wheels | wc -l) wheels ($wheels_mib MiB) and the data in ${#pieces[@]} pieces of ${piece_mib} MiB
(the working tree itself is about $tree_mib MiB a call). Device calls, back to back (a machine
keeps its files only while it is warm):
  1. carry [".carry/wheels"]     command: bash benchmarks/gpu_check.sh receive
EOF
n=2
for piece in "${pieces[@]}"; do
  echo "  $n. carry [\"$piece\"]  command: bash benchmarks/gpu_check.sh receive"
  n=$((n + 1))
done
echo "  $n. command: bash benchmarks/gpu_check.sh     (timeout_s 600; results come back in \$OUT)"
