# shellcheck shell=sh
# Output: facts go to stdout as key=value lines (the components parse them);
# progress and errors go to stderr, each line named by the script (SCRIPT_NAME,
# set in its head).

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
fact() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

# The arguments as one line of shell words, each single-quoted (for a trap).
shell_quote() {
    for _word in "$@"; do
        printf "'%s' " "$(printf '%s' "$_word" | sed "s/'/'\\\\''/g")"
    done
}
