#!/usr/bin/env bash
# Reuse or start the Redis and PostgreSQL that examgate talks to.
#
#   scripts/services.sh up      reuse what answers at EXAMGATE_REDIS_URL / EXAMGATE_DATABASE_URL,
#                               otherwise (loopback targets only) start private instances under .run/
#   scripts/services.sh down    stop only the private instances this script started under .run/
#   scripts/services.sh status  say what is reachable and what is private (exit 3 if something is not reachable)
#
# Missing server binaries are installed with apt (Debian packages redis-server / postgresql).
# Creating the application database is not done here: `examgate migrate` does that.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

REDIS_URL=${EXAMGATE_REDIS_URL:-redis://127.0.0.1:6379/0}
DATABASE_URL=${EXAMGATE_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/examgate}

RUN_DIR=$ROOT/.run
REDIS_DIR=$RUN_DIR/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
REDIS_ADDR_FILE=$REDIS_DIR/addr          # "host port" of the private instance
PG_LINK=$RUN_DIR/pg                      # a directory, or a symlink to one when the repo is not reachable by postgres
WAIT_SECONDS=10

APT_UPDATED=0

# ---------------------------------------------------------------- output

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }
# Prefix every line of a command's output, so all output starts with "services: ".
prefixed() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        printf 'services:   %s\n' "$line"
    done
}
show_log_tail() {  # file [lines]
    [[ -r $1 ]] || return 0
    say "last lines of ${1#"$ROOT"/}:"
    tail -n "${2:-20}" "$1" | prefixed
}
have() { command -v "$1" >/dev/null 2>&1; }
rel() { printf '%s' "${1#"$ROOT"/}"; }

# ---------------------------------------------------------------- URLs

# parse_url URL DEFAULT_PORT -> sets URL_SCHEME URL_HOST URL_PORT (host lower-cased, IPv6 without brackets)
parse_url() {
    local url=$1 default_port=$2 rest netloc hostport
    [[ $url == *://* ]] || die "cannot parse '$url': expected scheme://host[:port]/..."
    URL_SCHEME=${url%%://*}
    rest=${url#*://}
    netloc=${rest%%[/?#]*}
    hostport=${netloc##*@}
    if [[ $hostport == \[* ]]; then
        URL_HOST=${hostport#\[}
        URL_HOST=${URL_HOST%%]*}
        rest=${hostport#*]}
        URL_PORT=${rest#:}
    elif [[ $hostport == *:* ]]; then
        URL_HOST=${hostport%:*}
        URL_PORT=${hostport##*:}
    else
        URL_HOST=$hostport
        URL_PORT=
    fi
    URL_HOST=${URL_HOST,,}
    URL_PORT=${URL_PORT:-$default_port}
    [[ -n $URL_HOST ]] || die "cannot parse '$url': no host"
    if ! [[ $URL_PORT =~ ^[0-9]+$ ]] || ((URL_PORT < 1 || URL_PORT > 65535)); then
        die "cannot parse '$url': bad port '$URL_PORT'"
    fi
}

is_loopback() {
    case $1 in
        localhost | localhost.localdomain | 127.* | ::1 | 0:0:0:0:0:0:0:1) return 0 ;;
        *) return 1 ;;
    esac
}

# Address a private server binds for a loopback target host.
bind_addr() {
    case $1 in
        127.* | ::1) printf '%s' "$1" ;;
        0:0:0:0:0:0:0:1) printf '::1' ;;
        *) printf '127.0.0.1' ;;
    esac
}

hostport() { if [[ $1 == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi; }

# ---------------------------------------------------------------- probes

# (The single-quoted bash -c scripts below expand $1/$2 in the child shell, on purpose.)
# shellcheck disable=SC2016
tcp_open() {  # host port
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# redis_probe host port: 0 = answers PING (as Redis), 1 = port open but no Redis reply, 2 = nothing listening
# shellcheck disable=SC2016
redis_probe() {
    local h=$1 p=$2 out=''
    if have redis-cli; then
        out=$(timeout 5 redis-cli -h "$h" -p "$p" ping 2>/dev/null </dev/null) || true
    else
        out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r line <&3
            printf "%s" "$line"' _ "$h" "$p" 2>/dev/null) || true
    fi
    out=${out%$'\r'}
    case $out in
        PONG | +PONG) return 0 ;;
        *NOAUTH* | *WRONGPASS* | *"Authentication required"*) return 0 ;;  # a Redis that wants a password
    esac
    tcp_open "$h" "$p" && return 1
    return 2
}

# pg_probe host port: 0 = accepting connections, 1 = running but rejecting (starting/stopping),
#                     2 = port open but no PostgreSQL answer, 3 = nothing listening
# shellcheck disable=SC2016
pg_probe() {
    local h=$1 p=$2 rc=0 out=''
    if have pg_isready; then
        timeout 10 pg_isready -q -h "$h" -p "$p" -t 3 </dev/null >/dev/null 2>&1 || rc=$?
        case $rc in
            0) return 0 ;;
            1) return 1 ;;
        esac
    else
        # SSLRequest: a PostgreSQL server answers with a single 'S' or 'N'.
        out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "\x00\x00\x00\x08\x04\xd2\x16\x2f" >&3
            IFS= read -r -n1 -d "" c <&3
            printf "%s" "$c"' _ "$h" "$p" 2>/dev/null) || true
        [[ $out == S || $out == N ]] && return 0
    fi
    tcp_open "$h" "$p" && return 2
    return 3
}

# ---------------------------------------------------------------- apt

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# ---------------------------------------------------------------- process helpers

proc_cwd() { readlink "/proc/$1/cwd" 2>/dev/null || true; }

proc_name() {
    if [[ -r /proc/$1/comm ]]; then cat "/proc/$1/comm"; else ps -p "$1" -o comm= 2>/dev/null || true; fi
}

# A process is gone when it no longer exists or is a zombie waiting to be reaped.
is_alive() {
    local stat=''
    kill -0 "$1" 2>/dev/null || return 1
    [[ -r /proc/$1/stat ]] && stat=$(<"/proc/$1/stat")
    [[ ${stat##*) } != Z* ]]
}

wait_gone() {  # pid seconds
    local pid=$1 i
    for ((i = 0; i < $2 * 5; i++)); do
        is_alive "$pid" || return 0
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- redis

# Prints the pid of the private Redis under .run/redis if it is running.
redis_private_pid() {
    local pid cwd name
    [[ -r $REDIS_PIDFILE ]] || return 1
    pid=$(<"$REDIS_PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_alive "$pid" || return 1
    cwd=$(proc_cwd "$pid")
    if [[ -n $cwd ]]; then
        [[ $cwd == "$REDIS_DIR" ]] || return 1   # redis chdir()s to --dir: proves it is ours
    else
        name=$(proc_name "$pid")
        [[ $name == redis-server* || $name == redis-serv* ]] || return 1
    fi
    printf '%s' "$pid"
}

redis_private_addr() {  # -> sets PRIV_HOST PRIV_PORT
    PRIV_HOST='' PRIV_PORT=''
    if [[ -r $REDIS_ADDR_FILE ]]; then
        read -r PRIV_HOST PRIV_PORT <"$REDIS_ADDR_FILE" || true
    fi
}

redis_up() {
    local h p where pid rc bind i
    parse_url "$REDIS_URL" 6379
    h=$URL_HOST p=$URL_PORT where=$(hostport "$h" "$p")

    case $URL_SCHEME in
        unix)
            die "redis URL $REDIS_URL is a unix socket; this script only checks and starts TCP Redis — start it yourself"
            ;;
        rediss)
            # TLS: only check that the port accepts connections; a TLS Redis is never started here.
            tcp_open "$h" "$p" || die "redis $where (TLS, rediss://) is not reachable; this script cannot start a TLS Redis — start it or fix EXAMGATE_REDIS_URL"
            say "redis $where (TLS) accepts connections, reusing it"
            return 0
            ;;
    esac

    rc=0; redis_probe "$h" "$p" || rc=$?
    if ((rc == 0)); then
        pid=$(redis_private_pid) || pid=''
        redis_private_addr
        if [[ -n $pid && $PRIV_PORT == "$p" ]] && is_loopback "$h"; then
            say "redis $where reachable (private instance under .run/redis, pid $pid), reusing it"
        else
            say "redis $where reachable, reusing it"
        fi
        return 0
    fi
    if ((rc == 1)); then
        die "redis $where: something listens there but does not answer PING like Redis; free the port or set EXAMGATE_REDIS_URL"
    fi
    if ! is_loopback "$h"; then
        die "redis $where is not reachable and is not on this machine; start it or fix EXAMGATE_REDIS_URL"
    fi

    # Loopback and nothing listening: start (or complain about) the private instance.
    if pid=$(redis_private_pid); then
        redis_private_addr
        die "a private redis from an earlier run is still running on $(hostport "${PRIV_HOST:-?}" "${PRIV_PORT:-?}") (pid $pid), not $where; run 'scripts/services.sh down' first"
    fi
    if ! have redis-server; then
        apt_install redis-server "redis-server"
        have redis-server || die "redis-server is still not on PATH after installing package redis-server"
        # The Debian package may have started a system Redis on our port.
        rc=0; redis_probe "$h" "$p" || rc=$?
        if ((rc == 0)); then
            say "redis $where reachable after installing redis-server, reusing it"
            return 0
        fi
    fi

    bind=$(bind_addr "$h")
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PIDFILE"
    say "redis $where not reachable, starting a private instance (data dir .run/redis, nothing persisted)"
    if ! redis-server --port "$p" --bind "$bind" --save '' --appendonly no --daemonize yes \
        --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
        </dev/null >"$REDIS_DIR/start.out" 2>&1; then
        prefixed <"$REDIS_DIR/start.out"
        show_log_tail "$REDIS_LOG"
        die "redis-server failed to start on $where"
    fi
    printf '%s %s\n' "$bind" "$p" >"$REDIS_ADDR_FILE"
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        if redis_probe "$h" "$p"; then
            pid=$(redis_private_pid) || pid='?'
            say "redis $where started (private, pid $pid, log .run/redis/redis.log)"
            return 0
        fi
        sleep 0.2
    done
    show_log_tail "$REDIS_LOG"
    die "redis-server was started but $where did not answer PING within ${WAIT_SECONDS}s"
}

redis_down() {
    local pid out
    if ! pid=$(redis_private_pid); then
        if [[ -e $REDIS_PIDFILE ]]; then
            rm -f "$REDIS_PIDFILE"
            say "redis: no private instance running (removed stale .run/redis/redis.pid)"
        else
            say "redis: no private instance running, nothing to stop"
        fi
        return 0
    fi
    redis_private_addr
    if have redis-cli && [[ -n $PRIV_PORT ]] \
        && out=$(timeout 5 redis-cli -h "${PRIV_HOST:-127.0.0.1}" -p "$PRIV_PORT" info server 2>/dev/null </dev/null) \
        && [[ $out == *"process_id:$pid"* ]]; then
        timeout 10 redis-cli -h "${PRIV_HOST:-127.0.0.1}" -p "$PRIV_PORT" shutdown nosave </dev/null >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! wait_gone "$pid" "$WAIT_SECONDS"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "private redis (pid $pid) did not stop; see .run/redis/redis.log"
    fi
    rm -f "$REDIS_PIDFILE" "$REDIS_ADDR_FILE"
    say "redis: stopped the private instance on $(hostport "${PRIV_HOST:-127.0.0.1}" "${PRIV_PORT:-?}") (pid $pid)"
}

redis_status() {
    local h p where rc pid reach
    parse_url "$REDIS_URL" 6379
    h=$URL_HOST p=$URL_PORT where=$(hostport "$h" "$p")
    rc=0
    case $URL_SCHEME in
        unix) rc=2 ;;
        rediss) tcp_open "$h" "$p" || rc=2 ;;
        *) redis_probe "$h" "$p" || rc=$? ;;
    esac
    case $rc in
        0) reach="reachable" ;;
        1) reach="NOT reachable (port open, but no Redis answer)" ;;
        *) reach="NOT reachable" ;;
    esac
    redis_private_addr
    if pid=$(redis_private_pid); then
        if [[ $PRIV_PORT == "$p" ]] && is_loopback "$h"; then
            say "redis $where $reach; private instance (pid $pid, .run/redis)"
        else
            say "redis $where $reach; not private (a private instance runs on $(hostport "$PRIV_HOST" "$PRIV_PORT"), pid $pid)"
        fi
    else
        say "redis $where $reach; not private (no private instance running)"
    fi
    return $((rc == 0 ? 0 : 3))
}

# ---------------------------------------------------------------- postgres

# Real directory behind .run/pg (may be a symlink to a directory under /tmp).
pg_base() {
    if [[ -e $PG_LINK ]]; then readlink -f "$PG_LINK"; else printf '%s' "$PG_LINK"; fi
}

# Bin dir with initdb/pg_ctl/postgres; prefers the version of an existing data dir. Empty if none.
pg_bindir() {
    local want='' d best=''
    [[ -r $1/PG_VERSION ]] && want=$(<"$1/PG_VERSION")
    if [[ -n $want ]]; then
        d=/usr/lib/postgresql/$want/bin
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && { printf '%s' "$d"; return 0; }
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
        best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
    done
    if [[ -z $best ]] && have initdb && have pg_ctl; then
        # Not Debian's layout: use initdb from PATH, and only with a pg_ctl/postgres next to it.
        d=$(dirname "$(readlink -f "$(command -v initdb)")")
        [[ -x $d/pg_ctl && -x $d/postgres ]] && best=$d
    fi
    if [[ -n $want && -n $best ]]; then
        local have_ver
        have_ver=$("$best/pg_ctl" --version 2>/dev/null | awk '{print $3}')
        have_ver=${have_ver%%.*}
        if [[ -n $have_ver && $have_ver != "$want" ]]; then
            die "the private data dir .run/pg/data is PostgreSQL $want but only PostgreSQL $have_ver binaries were found ($best); remove .run/pg (losing its data) or install PostgreSQL $want"
        fi
    fi
    printf '%s' "$best"
}

# Who runs the private PostgreSQL: initdb and postgres refuse to run as root.
pg_user_for() {  # data dir
    local owner
    if [[ $EUID -ne 0 ]]; then id -un; return 0; fi
    if [[ -d $1 ]]; then
        owner=$(stat -c %U "$1")
        [[ $owner != root && $owner != UNKNOWN ]] && { printf '%s' "$owner"; return 0; }
    fi
    printf 'postgres'
}

ensure_pg_user() {
    [[ $EUID -eq 0 ]] || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    have useradd || die "user 'postgres' is missing and useradd is not available; create a system user 'postgres' and re-run"
    local -a grp=(--user-group)
    getent group postgres >/dev/null 2>&1 && grp=(-g postgres)
    useradd --system "${grp[@]}" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres \
        || die "could not create the system user 'postgres'"
    say "created system user postgres (initdb and postgres refuse to run as root)"
}

as_pg() {  # user cwd command...
    local user=$1 dir=$2
    shift 2
    if [[ $EUID -eq 0 && $user != root ]]; then
        have runuser || die "runuser is not available; cannot run PostgreSQL as user $user"
        (cd "$dir" && runuser -u "$user" -- "$@")
    else
        (cd "$dir" && "$@")
    fi
}

# Prepare .run/pg for user $1 and set PG_BASE. If that user cannot reach the repo
# (e.g. the clone lives under a mode-700 home), use a directory under /tmp and symlink .run/pg to it.
pg_prepare_base() {
    local user=$1 alt
    mkdir -p "$RUN_DIR"
    if [[ ! -e $PG_LINK ]]; then
        [[ -L $PG_LINK ]] && rm -f "$PG_LINK"   # dangling symlink (its /tmp target was cleaned)
        mkdir -p "$PG_LINK"
    fi
    PG_BASE=$(pg_base)
    if [[ $EUID -eq 0 && $user != root ]]; then
        chown "$user": "$PG_BASE"
        if ! runuser -u "$user" -- test -w "$PG_BASE" -a -x "$PG_BASE"; then
            [[ -L $PG_LINK ]] && die "user $user cannot write $PG_BASE"
            rmdir "$PG_LINK" 2>/dev/null || die "user $user cannot reach $PG_BASE (a parent directory is not traversable) and .run/pg is not empty; remove .run/pg and re-run"
            alt=$(mktemp -d "${TMPDIR:-/tmp}/examgate-pg.XXXXXX")
            chown "$user": "$alt"
            chmod 700 "$alt"
            ln -s "$alt" "$PG_LINK"
            PG_BASE=$alt
            say "user $user cannot reach $ROOT; keeping the private cluster in $alt (.run/pg links to it)"
        fi
    fi
}

# Socket dir: the base dir, unless that makes the socket path too long for a unix socket.
pg_socket_dir() {  # base port
    local s="$1/.s.PGSQL.$2"
    if ((${#s} > 100)); then printf '/tmp'; else printf '%s' "$1"; fi
}

# Prints "pid port listen" of the private postmaster if it is running.
pg_private_info() {
    local base data pid cwd
    local -a _pm
    base=$(pg_base)
    data=$base/data
    [[ -r $data/postmaster.pid ]] || return 1
    mapfile -t _pm <"$data/postmaster.pid" || return 1
    pid=${_pm[0]:-}
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_alive "$pid" || return 1
    cwd=$(proc_cwd "$pid")
    if [[ -n $cwd ]]; then
        [[ $cwd == "$(readlink -f "$data")" ]] || return 1   # the postmaster chdir()s to its data dir
    else
        [[ $(proc_name "$pid") == postgres* ]] || return 1
    fi
    printf '%s %s %s' "$pid" "${_pm[3]:-?}" "${_pm[5]:-127.0.0.1}"
}

pg_up() {
    local h p where rc info pid pport _listen bindir user data sock listen locale i
    parse_url "$DATABASE_URL" 5432
    h=$URL_HOST p=$URL_PORT where=$(hostport "$h" "$p")

    rc=0; pg_probe "$h" "$p" || rc=$?
    if ((rc == 1)); then
        say "postgres $where is starting up or shutting down, waiting up to ${WAIT_SECONDS}s"
        for ((i = 0; i < WAIT_SECONDS * 2 && rc == 1; i++)); do
            sleep 0.5
            rc=0; pg_probe "$h" "$p" || rc=$?
        done
        ((rc == 1)) && die "postgres $where keeps rejecting connections; check that server"
    fi
    if ((rc == 0)); then
        if info=$(pg_private_info) && read -r pid pport _listen <<<"$info" && [[ $pport == "$p" ]] && is_loopback "$h"; then
            say "postgres $where reachable (private instance under .run/pg, pid $pid), reusing it"
        else
            say "postgres $where reachable, reusing it"
        fi
        return 0
    fi
    if ((rc == 2)); then
        die "postgres $where: something listens there but does not answer like PostgreSQL; free the port or set EXAMGATE_DATABASE_URL"
    fi
    if ! is_loopback "$h"; then
        die "postgres $where is not reachable and is not on this machine; start it or fix EXAMGATE_DATABASE_URL"
    fi

    if info=$(pg_private_info); then
        read -r pid pport _listen <<<"$info"
        die "a private postgres from an earlier run is still running on port $pport (pid $pid), not $where; run 'scripts/services.sh down' first"
    fi

    PG_BASE=$(pg_base)
    data=$PG_BASE/data
    bindir=$(pg_bindir "$data")
    if [[ -z $bindir ]]; then
        apt_install postgresql "the PostgreSQL server (initdb, pg_ctl, postgres)"
        bindir=$(pg_bindir "$data")
        [[ -n $bindir ]] || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin even after installing package postgresql"
        # The Debian package may have created and started a cluster on our port.
        rc=0; pg_probe "$h" "$p" || rc=$?
        if ((rc == 0)); then
            say "postgres $where reachable after installing postgresql, reusing it"
            return 0
        fi
    fi

    user=$(pg_user_for "$data")
    [[ $user == postgres ]] && ensure_pg_user
    pg_prepare_base "$user"
    data=$PG_BASE/data

    if [[ -d $data && ! -s $data/PG_VERSION ]]; then
        say "removing an incomplete .run/pg/data from an earlier failed initdb"
        rm -rf "$data"
    fi
    if [[ ! -d $data ]]; then
        locale=C.UTF-8
        if have locale && ! locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then locale=C; fi
        say "initialising a private PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') cluster in .run/pg/data (user $user, trust auth, locale $locale)"
        if ! as_pg "$user" "$PG_BASE" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale="$locale" \
            </dev/null >"$PG_BASE/initdb.log" 2>&1; then
            if [[ $locale != C ]]; then
                say "initdb with locale $locale failed, retrying with locale C"
                rm -rf "$data"
                as_pg "$user" "$PG_BASE" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
                    </dev/null >"$PG_BASE/initdb.log" 2>&1 || { show_log_tail "$PG_BASE/initdb.log"; die "initdb failed"; }
            else
                show_log_tail "$PG_BASE/initdb.log"
                die "initdb failed"
            fi
        fi
    fi

    listen=$(bind_addr "$h")
    sock=$(pg_socket_dir "$PG_BASE" "$p")
    say "postgres $where not reachable, starting the private cluster in .run/pg (port $p, socket dir $(rel "$sock"))"
    if ! as_pg "$user" "$PG_BASE" "$bindir/pg_ctl" -D "$data" \
        -o "-p $p -k '$sock' -c listen_addresses='$listen'" \
        -l "$PG_BASE/pg.log" -t 60 start -w </dev/null >"$PG_BASE/pg_ctl.out" 2>&1; then
        prefixed <"$PG_BASE/pg_ctl.out"
        show_log_tail "$PG_BASE/pg.log"
        die "pg_ctl start failed for $where"
    fi
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        if pg_probe "$h" "$p"; then
            pid=$(pg_private_info | awk '{print $1}') || pid='?'
            say "postgres $where started (private, pid ${pid:-?}, superuser postgres, trust auth, log .run/pg/pg.log)"
            return 0
        fi
        sleep 0.5
    done
    show_log_tail "$PG_BASE/pg.log"
    die "the private postgres started but $where does not accept connections"
}

pg_down() {
    local info pid pport _listen base data bindir user
    if ! info=$(pg_private_info); then
        say "postgres: no private instance running, nothing to stop"
        return 0
    fi
    read -r pid pport _listen <<<"$info"
    base=$(pg_base)
    data=$base/data
    bindir=$(pg_bindir "$data")
    user=$(pg_user_for "$data")
    if [[ -n $bindir ]]; then
        if ! as_pg "$user" "$base" "$bindir/pg_ctl" -D "$data" stop -m fast -w -t 60 </dev/null >"$base/pg_ctl.out" 2>&1; then
            prefixed <"$base/pg_ctl.out"
            die "pg_ctl stop failed for the private postgres (pid $pid); see .run/pg/pg.log"
        fi
    else
        kill -INT "$pid" 2>/dev/null || true   # SIGINT = fast shutdown
        wait_gone "$pid" 60 || die "private postgres (pid $pid) did not stop"
    fi
    say "postgres: stopped the private instance on port $pport (pid $pid)"
}

pg_status() {
    local h p where rc info pid pport _listen reach
    parse_url "$DATABASE_URL" 5432
    h=$URL_HOST p=$URL_PORT where=$(hostport "$h" "$p")
    rc=0; pg_probe "$h" "$p" || rc=$?
    case $rc in
        0) reach="reachable" ;;
        1) reach="NOT reachable (running, but rejecting connections)" ;;
        2) reach="NOT reachable (port open, but no PostgreSQL answer)" ;;
        *) reach="NOT reachable" ;;
    esac
    if info=$(pg_private_info); then
        read -r pid pport _listen <<<"$info"
        if [[ $pport == "$p" ]] && is_loopback "$h"; then
            say "postgres $where $reach; private instance (pid $pid, .run/pg)"
        else
            say "postgres $where $reach; not private (a private instance runs on port $pport, pid $pid)"
        fi
    else
        say "postgres $where $reach; not private (no private instance running)"
    fi
    return $((rc == 0 ? 0 : 3))
}

# ---------------------------------------------------------------- main

usage() {
    say "usage: scripts/services.sh up|down|status"
    exit 2
}

main() {
    local rc=0
    case ${1:-} in
        up)
            redis_up
            pg_up
            ;;
        down)
            redis_down
            pg_down
            ;;
        status)
            redis_status || rc=$?
            pg_status || rc=$?
            return "$rc"
            ;;
        *) usage ;;
    esac
}

main "$@"
