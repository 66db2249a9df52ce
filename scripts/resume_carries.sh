#!/usr/bin/env bash
# Gathers the checkpoint chunks that scripts/gpu_table.sh's export sent back (the ckpt/ folders of
# a session's calls) into .data/resume/carry-K folders of at most three chunks (~47 MB, inside a
# call's 64 MiB with the tree), each with the manifest, for the next session's "carried" calls:
#   bash scripts/resume_carries.sh /work/.device/5/ckpt /work/.device/6/ckpt ...
# Every chunk the manifest lists must be there (a run short of one would start afresh); the
# old .data/resume is replaced (RESUME_DIR: elsewhere, for tests). Once the runs finished,
# rm -rf .data/resume.
set -euo pipefail
cd "$(dirname "$0")/.."
resume=${RESUME_DIR:-.data/resume}
[ $# -gt 0 ] || { echo "usage: $0 CKPT_DIR..." >&2; exit 2; }
manifest=$(mktemp)
cat "${@/%//manifest.txt}" 2>/dev/null | sort -u > "$manifest" || true
[ -s "$manifest" ] || { echo "resume_carries: no manifest.txt in $*" >&2; exit 1; }
if [ "$(cut -d' ' -f1 "$manifest" | sort | uniq -d)" ]; then
  echo "resume_carries: the manifests disagree (two exports?):" >&2; cat "$manifest" >&2; exit 1
fi
missing=0
while read -r id sha n step; do
  got=$(find "$@" -name "$id.tar.[0-9][0-9][0-9]" | wc -l)
  [ "$got" = "$n" ] || { echo "resume_carries: $id: $got of $n chunks" >&2; missing=1; }
done < "$manifest"
[ $missing = 0 ] || exit 1
rm -rf "$resume"
k=0 i=0
for f in $(find "$@" -name "*.tar.[0-9][0-9][0-9]" -printf "%f %p\n" | sort | cut -d' ' -f2); do
  if [ $((i % 3)) = 0 ]; then
    k=$((k + 1)) && mkdir -p "$resume/carry-$k" && cp "$manifest" "$resume/carry-$k/manifest.txt"
  fi
  cp "$f" "$resume/carry-$k/"
  i=$((i + 1))
done
rm -f "$manifest"
cat "$resume/carry-1/manifest.txt"
du -b "$resume"/carry-*
