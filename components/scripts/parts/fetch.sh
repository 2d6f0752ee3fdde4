# shellcheck shell=sh
# Bounded downloads. Every download is bounded: connecting, stalling (under
# LOW_SPEED bytes/s for LOW_SPEED_TIME s) and the whole transfer (what is
# left of the step's budget). A host that cannot reach the server is told
# apart from a file that is not there, and each failure says what happened.

# A download that moves less than LOW_SPEED bytes/s for LOW_SPEED_TIME seconds has stalled.
CONNECT_TIMEOUT=20 LOW_SPEED=1024 LOW_SPEED_TIME=30

# fetch URL DEST SETTING [ALSO]: returns 1 when the server answers that the
# file is not there (HTTP 404 or 410, a missing file:// path). Any other
# failure stops the step saying what happened (see fetch_failed): the name
# did not resolve (DNS), the connection failed, TLS failed, a limit was hit,
# or the server answered another error. SETTING names the stack setting that
# points at the server; ALSO, another fix offered when the host cannot reach it.
# POSIX sh has no local variables: helpers use names no caller uses.
fetch() {
    _fetch_url=$1 _fetch_dest=$2
    _fetch_max=$(remaining)
    _fetch_slow=$LOW_SPEED_TIME _fetch_connect=$CONNECT_TIMEOUT
    [ "$_fetch_slow" -le "$_fetch_max" ] || _fetch_slow=$_fetch_max
    [ "$_fetch_connect" -le "$_fetch_max" ] || _fetch_connect=$_fetch_max
    _fetch_rc=0 _fetch_log="$_fetch_dest.log"
    if have curl; then
        # curl's own limit comes first, so it can say which phase timed out.
        _fetch_code=$(timeout "$((_fetch_max + 2))" curl -fsSL --retry 3 --connect-timeout "$_fetch_connect" \
            --max-time "$_fetch_max" --speed-limit "$LOW_SPEED" --speed-time "$_fetch_slow" \
            --retry-max-time "$_fetch_max" -w '%{http_code} %{time_connect}' -o "$_fetch_dest" "$_fetch_url" \
            2>"$_fetch_log") || _fetch_rc=$?
        _fetch_why=$(curl_failure "$_fetch_rc" "$_fetch_code")
    elif have wget; then
        # -nv: errors only, which say what failed (wget's exit code 4 covers
        # every network failure), in English (LC_ALL=C) for wget_failure to read.
        # wget's own limits come first, as curl's do.
        LC_ALL=C timeout "$((_fetch_max + 2))" wget -nv -T "$_fetch_slow" --connect-timeout="$_fetch_connect" \
            -t 3 -O "$_fetch_dest" "$_fetch_url" 2>"$_fetch_log" || _fetch_rc=$?
        _fetch_why=$(wget_failure "$_fetch_rc" "$_fetch_log")
    else
        die "neither curl nor wget is installed; install one of them to download $DOWNLOADS"
    fi
    _fetch_said=$(grep -v '^ *$' "$_fetch_log" 2>/dev/null | tail -n 1 || true)
    rm -f "$_fetch_log"
    [ "$_fetch_rc" != 0 ] || return 0
    rm -f "$_fetch_dest"
    fetch_failed "$_fetch_url" "$_fetch_why" "$_fetch_said" "$3" "${4:-}" \
        "$_fetch_connect" "$_fetch_slow" "$_fetch_max"
}

# The kind of a curl failure: notfound, dns, connect, tls, connect-timeout,
# timeout, http:<code>, broken or other.
curl_failure() {
    case $1 in
        0) echo ok ;;
        22) case ${2%% *} in 404 | 410) echo notfound ;; *) echo "http:${2%% *}" ;; esac ;;
        37) echo notfound ;;
        5 | 6) echo dns ;;
        7) echo connect ;;
        35 | 51 | 53 | 54 | 58 | 59 | 60 | 64 | 66 | 77 | 80 | 82 | 83 | 90 | 91) echo tls ;;
        # One of curl's limits; without a connect time the connection never came up.
        28) case ${2#* } in *[1-9]*) echo timeout ;; *) echo connect-timeout ;; esac ;;
        124) echo timeout ;; # the step's budget ran out (curl's retries included)
        18 | 52 | 56) echo broken ;;
        *) echo other ;;
    esac
}

# The kind of a wget failure, from its log: "failed: Connection timed out." is
# a connect that went unanswered (a read that did not is "Read error (...)"),
# judged on the last attempt, which the step's budget may have cut short.
wget_failure() {
    if [ "$1" = 0 ]; then echo ok
    elif grep -v '^ *$' "$2" | tail -n 1 | grep -qi 'failed: connection timed out'; then echo connect-timeout
    elif [ "$1" = 124 ] || grep -qi 'timed out' "$2"; then echo timeout
    elif grep -qiE 'ERROR (404|410)' "$2"; then echo notfound
    elif grep -qiE 'resolv|bad address|name or service not known' "$2"; then echo dns
    elif grep -qiE 'refused|unreachable|no route' "$2"; then echo connect
    elif [ "$1" = 5 ] || grep -qiE 'ssl|tls|certificate' "$2"; then echo tls
    elif grep -qE 'ERROR [0-9]+' "$2"; then echo "http:$(sed -n 's/.*ERROR \([0-9]*\).*/\1/p' "$2" | tail -n 1)"
    else echo other
    fi
}

# One message per kind of failure (return 1 for "not there", for the caller):
# URL WHY SAID SETTING ALSO CONNECT SLOW MAX, the last three the limits used.
fetch_failed() {
    _ff_url=$1 _ff_why=$2 _ff_said=${3:+ ($3)} _ff_setting=$4
    _ff_server=$(printf '%s' "$_ff_url" | sed -n 's|^[a-z]*://\([^/]*\).*|\1|p')
    _ff_fix="check $_ff_setting${5:+, $5}"
    case $_ff_why in
        notfound) return 1 ;;
        dns) die "cannot resolve $_ff_server (DNS) for $_ff_url: this host cannot look up the release server$_ff_said; $_ff_fix" ;;
        connect) die "cannot connect to $_ff_server for $_ff_url: connection refused or no route$_ff_said; $_ff_fix" ;;
        connect-timeout) die "cannot connect to $_ff_server for $_ff_url: no answer within ${6}s (timeout)$_ff_said; $_ff_fix" ;;
        tls) die "TLS with $_ff_server failed for $_ff_url (handshake or certificate)$_ff_said; check the server's certificate and that it speaks https; $_ff_fix" ;;
        timeout) die "download of $_ff_url stopped at a limit: connect ${6}s, stalled below $LOW_SPEED bytes/s for ${7}s, or ${8}s left of the step's ${STEP_TIMEOUT}s${BUDGET_SETTING:+ ($BUDGET_SETTING)}; check the mirror ($_ff_setting)" ;;
        http:*) die "$_ff_url answered HTTP ${_ff_why#http:}$_ff_said; check $_ff_setting" ;;
        broken) die "the connection to $_ff_server broke off while fetching $_ff_url$_ff_said; run again, or check the mirror ($_ff_setting)" ;;
        *) die "download of $_ff_url failed$_ff_said; check $_ff_setting" ;;
    esac
}
