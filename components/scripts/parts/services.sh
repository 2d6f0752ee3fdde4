# shellcheck shell=sh
# Services: restarted and asked through the host's service manager, each
# command bounded by the step's budget.

# How this host runs services: systemd (running as init), an init with
# `service`, or OpenRC; fails when it has none of them.
service_manager() {
    if [ -d /run/systemd/system ] && have systemctl; then
        echo systemd
    elif have service; then
        echo service
    elif have rc-service; then
        echo openrc
    else
        return 1
    fi
}

# service_restart SERVICE [MANAGER]: MANAGER defaults to service_manager's.
# Bounded, and without the lock's descriptor: a daemon started from here
# must not hold the step lock for its whole life.
service_restart() {
    case ${2:-$(service_manager)} in
        systemd) timeout "$(remaining)" systemctl restart "$1" 9>&- ;;
        service) timeout "$(remaining)" service "$1" restart 9>&- ;;
        openrc) timeout "$(remaining)" rc-service "$1" restart 9>&- ;;
        # Fail, not exit: the caller may still have a previous config to put back.
        *) log "cannot restart $1: no systemd and no 'service' command on this host" && return 1 ;;
    esac
}

# service_active SERVICE [MANAGER]
service_active() {
    case ${2:-$(service_manager)} in
        systemd) timeout "$(remaining)" systemctl is-active --quiet "$1" ;;
        service) timeout "$(remaining)" service "$1" status >/dev/null 2>&1 ;;
        openrc) timeout "$(remaining)" rc-service "$1" status >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

# Where SERVICE's log stands now, for service_log: the time, and the size of
# the log file Debian's init scripts write.
log_mark() {
    printf '%s %s\n' "$(date +%s)" "$({ wc -c <"/var/log/$1.log"; } 2>/dev/null || echo 0)"
}

# What SERVICE logged since MARK (log_mark's): from journald under systemd,
# else from /var/log/<service>.log (Debian's sysvinit scripts, e.g. /etc/init.d/docker).
service_log() {
    if [ "$(service_manager)" = systemd ] && have journalctl; then
        journalctl -u "$1" --since "@${2%% *}" --no-pager -o cat 2>/dev/null
    elif [ -f "/var/log/$1.log" ]; then
        tail -c +"$((${2#* } + 1))" "/var/log/$1.log"
    fi
}
