#!/bin/sh
# pretend to download dependencies into $1 unless they are cached there already
set -e
dir=$1
if [ -f "$dir/dep-a.tar" ]; then
  echo "cache hit: $(ls "$dir" | wc -l) files in $dir"
else
  echo "cache miss: fetching into $dir"
  sleep 1
  for d in dep-a dep-b dep-c; do echo "$d contents" > "$dir/$d.tar"; done
fi
