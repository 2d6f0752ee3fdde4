# shellcheck shell=sh
# Reading an engine's log for the reason it failed.

# Reads an engine's log and prints ": <reason>", the line that best says why
# PART failed, or nothing. Lines are weighed by level, in logrus's text form
# (level=error msg="..." error="...") and in JSON ("level":"error", ...):
# routine levels never count; a plugin that failed to load is logged as a
# warning and counts for the CRI plugin. Lines about CNI (no network config
# yet, routine before a cluster exists) count only when nothing else does.
# Plain lines (the daemon's last words on stderr, a Go panic) count when they
# say something failed; a panic's stack frames never do.
pick_reason() {
    awk -v part="$1" '
        function value(name,    q) {
            q = "\"([^\"\\\\]|\\\\.)*\""
            if (match($0, "\"" name "\":" q)) return unquote(substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 3))
            if (match($0, "(^| )" name "=" q)) { v = substr($0, RSTART, RLENGTH); sub(/^ ?[a-z]+=/, "", v); return unquote(v) }
            if (match($0, "(^| )" name "=[^ ]+")) { v = substr($0, RSTART, RLENGTH); sub(/^ ?[a-z]+=/, "", v); return v }
            return ""
        }
        function unquote(v) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); return v }
        {
            level = value("level")
            if (level == "") {
                if ($0 ~ /^[ \t]|^goroutine |^created by |^\[signal |^(Start|Stop|Failed to start|Scheduled restart)|\.service: /) next
                if (tolower($0) !~ /error|fail|invalid|cannot|unable|panic|denied|no such|not a directory/) next
                text = $0; score = ($0 ~ /^panic: /) ? 5 : 4
            } else {
                msg = value("msg"); err = value("error")
                text = (err == "" ? msg : msg ": " err)
                if (level ~ /^(fatal|panic)$/) score = 5
                else if (level == "error") score = 3
                else if (level ~ /^warn/ && msg ~ /failed to load plugin/) score = 2
                else next
            }
            lower = tolower(text)
            if (part == "cri" && lower ~ /cri/ && lower !~ /cni/) score += 3
            if (lower ~ /cni/) score = 1
            if (score >= best) { best = score; reason = text }
        }
        END { if (reason != "") printf ": %s", reason }
    '
}
