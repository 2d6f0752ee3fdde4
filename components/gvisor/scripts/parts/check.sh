# shellcheck shell=sh
# The read-only check (`check`): a digest of each item the steps put on the
# host, for drift detection (components/gvisor/drift.py). It takes no lock,
# writes nothing and restarts nothing; "absent" when an item is not there.
# The verify step runs it last, so the state records what the steps left.

# The first 128 bits of a SHA-512 (plenty to see a change; the state keeps them).
short_digest() { sha512sum | cut -c1-32; }

# FILE's digest, or "absent".
digest_file() {
    if [ -f "$1" ]; then short_digest < "$1"; else echo absent; fi
}

# The digest of stdin, or "absent" when it is empty.
digest_text() {
    _digest_text=$(cat)
    if [ -z "$_digest_text" ]; then echo absent; else printf '%s\n' "$_digest_text" | short_digest; fi
}

# Docker's entry for runtime NAME in FILE (daemon.json): runtimes.NAME and
# the top-level default-runtime, each as compact JSON (blanks outside strings
# dropped), so a file only re-indented has the same entry.
docker_entry() {
    [ -f "$1" ] || return 0
    awk -v name="$2" '
        { text = text $0 "\n" }
        END {
            n = length(text); depth = 0; instr = 0; esc = 0; tok = ""; key = ""; c1 = ""
            runtimes = 0; grab = 0; out = ""; def = ""
            for (i = 1; i <= n; i++) {
                ch = substr(text, i, 1)
                if (instr) {
                    tok = tok ch
                    if (esc) esc = 0
                    else if (ch == "\\") esc = 1
                    else if (ch == "\"") instr = 0
                    if (grab) out = out ch
                    continue
                }
                if (ch ~ /[ \t\r\n]/) continue
                if (ch == "\"") { instr = 1; tok = "\""; if (grab) out = out ch; continue }
                if (ch == ":") {
                    key = tok
                    if (depth == 1 && key == "\"default-runtime\"") c1 = "default"
                    if (depth == 2 && runtimes && key == "\"" name "\"") { grab = 1; gdepth = depth; continue }
                    if (grab) out = out ch
                    continue
                }
                if (ch == "{" || ch == "[") {
                    if (depth == 1 && key == "\"runtimes\"" && ch == "{") runtimes = 1
                    depth++
                    if (grab) out = out ch
                    tok = ""
                    continue
                }
                if (ch == "}" || ch == "]") {
                    if (c1 == "default") { def = tok; c1 = "" }
                    if (grab) out = out ch
                    depth--
                    if (depth == 1) runtimes = 0
                    if (grab && depth == gdepth) grab = 0
                    tok = ""
                    continue
                }
                if (ch == ",") {
                    if (grab && depth == gdepth) grab = 0
                    if (grab) out = out ch
                    if (c1 == "default") { def = tok; c1 = "" }
                    tok = ""; key = ""
                    continue
                }
                tok = tok ch
                if (grab) out = out ch
            }
            if (c1 == "default") def = tok
            if (out != "") print "runtime=" out
            if (def != "") print "default-runtime=" def
        }' "$1"
}

# PREFIX RUNTIME RUNSC_TOML: one fact per item, check_<item>=<digest|absent>.
cmd_check() {
    [ $# -eq 3 ] || usage
    use_layout
    fact check_runsc "$(digest_file "$1/runsc")"
    fact check_shim "$(digest_file "$1/containerd-shim-runsc-v1")"
    fact check_docker_runtime "$(docker_entry "$DAEMON_JSON" "$2" | digest_text)"
    if [ -f "$CONTAINERD_CONFIG" ]; then
        fact check_containerd_block "$(sed -n "/^$BLOCK_BEGIN\$/,/^$BLOCK_END\$/p" "$CONTAINERD_CONFIG" | digest_text)"
    else
        fact check_containerd_block absent
    fi
    fact check_runsc_toml "$(digest_file "$3")"
}
