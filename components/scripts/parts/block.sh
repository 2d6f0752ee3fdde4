# shellcheck shell=sh
# The block of lines this program adds to a file it shares with its owner,
# between two marker lines, so that it alone can be taken out again.

BLOCK_BEGIN="# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
BLOCK_END="# END gvisor-fleet runtime"

# FILE without the block.
strip_block() {
    sed "/^$BLOCK_BEGIN\$/,/^$BLOCK_END\$/d" "$1"
}

# True when FILE holds the block.
has_block() { grep -Fqx "$BLOCK_BEGIN" "$1"; }
