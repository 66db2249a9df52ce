#!/usr/bin/env bash
# Splits the CIFAR-10 parts (.data/cifar10/{part-a,part-b}, copied from ../shared/data) into three
# carries of about 37 MB each under .data/carry/{1,2,3}, for scripts/gpu_table.sh's three first
# calls. A device call carries at most 64 MiB with the working tree; part-a alone is 55 MB, so two
# carries left the tree under 5 MB of room, and the tree grows with every committed run.
#   bash scripts/split_carry.sh        # here, once; .data is git-ignored
# Carry 1: the first 36,600,000 bytes of part-a/train-0.npz; carry 2: the rest of it and
# part-b/test.npz; carry 3: part-b/train-1.npz and unpack.py. The device joins the two pieces
# (cat) and unpack.py checks the decoded arrays against its checksums.
set -euo pipefail
cd "$(dirname "$0")/.."
src=.data/cifar10 dst=.data/carry
head_bytes=36600000
for f in "$src/part-a/train-0.npz" "$src/part-b/test.npz" "$src/part-b/train-1.npz" .data/unpack.py; do
  [ -f "$f" ] || { echo "split_carry: missing $f (copy ../shared/data/cifar10 and unpack.py)" >&2; exit 1; }
done
rm -rf "$dst"
mkdir -p "$dst/1" "$dst/2" "$dst/3"
head -c "$head_bytes" "$src/part-a/train-0.npz" > "$dst/1/train-0.npz.0"
tail -c +"$((head_bytes + 1))" "$src/part-a/train-0.npz" > "$dst/2/train-0.npz.1"
cp "$src/part-b/test.npz" "$dst/2/"
cp "$src/part-b/train-1.npz" .data/unpack.py "$dst/3/"
cmp <(cat "$dst/1/train-0.npz.0" "$dst/2/train-0.npz.1") "$src/part-a/train-0.npz"
du -b "$dst"/1 "$dst"/2 "$dst"/3
