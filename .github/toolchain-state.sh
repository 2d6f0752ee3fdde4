#!/bin/sh
# Prints what the toolchain cache holds (every file with its size), so the
# main workflow saves the cache only when the set-up changed it.
for dir in "$HOME/.cache/gvisor-fleet" "$HOME/go/pkg/mod"; do
    [ -d "$dir" ] && find "$dir" -type f -printf '%p %s\n'
done | LC_ALL=C sort
