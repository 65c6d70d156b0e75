#!/usr/bin/env bash
# A three-member etcd cluster on 127.0.0.1, for trying the etcd store by
# hand and for benchmarks. (The Rust tests of atoll-etcd start their own.)
#
#   etcd-cluster.sh start DIR BASEPORT   start members 0..2; print the endpoints
#   etcd-cluster.sh stop DIR             kill every member and remove DIR
#   etcd-cluster.sh kill-member DIR N    kill member N (SIGKILL)
#   etcd-cluster.sh start-member DIR N   start member N again on its data
#   etcd-cluster.sh leader DIR           print the number of the leader
#
# Member N listens for clients on BASEPORT+2N and for peers on BASEPORT+2N+1
# (so 23790 gives clients 23790, 23792, 23794). DIR holds one data directory,
# log file and pid file per member, and the base port.
#
# Installs the Debian package etcd-server when /usr/bin/etcd is missing.
set -euo pipefail

ETCD=/usr/bin/etcd
ETCDCTL=/usr/bin/etcdctl
MEMBERS=3

usage() {
    sed -n '5,9p' "$0" >&2
    exit 2
}

die() {
    echo "etcd-cluster.sh: $*" >&2
    exit 1
}

ensure_etcd() {
    if [[ ! -x $ETCD ]]; then
        echo "installing etcd-server" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
    fi
    [[ -x $ETCD ]] || die "$ETCD is missing after installing etcd-server"
}

base_of() {
    [[ -f $1/base ]] || die "$1 holds no cluster (no $1/base)"
    cat "$1/base"
}

client_url() { echo "http://127.0.0.1:$(($1 + 2 * $2))"; }
peer_url() { echo "http://127.0.0.1:$(($1 + 2 * $2 + 1))"; }

endpoints() {
    local base=$1 n list=()
    for ((n = 0; n < MEMBERS; n++)); do list+=("$(client_url "$base" "$n")"); done
    (IFS=,; echo "${list[*]}")
}

running() {
    local pidfile=$1/m$2.pid
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start_member() {
    local dir=$1 n=$2 base initial=() m
    base=$(base_of "$dir")
    running "$dir" "$n" && die "member $n is running"
    for ((m = 0; m < MEMBERS; m++)); do initial+=("m$m=$(peer_url "$base" "$m")"); done
    "$ETCD" \
        --name "m$n" \
        --data-dir "$dir/m$n" \
        --listen-client-urls "$(client_url "$base" "$n")" \
        --advertise-client-urls "$(client_url "$base" "$n")" \
        --listen-peer-urls "$(peer_url "$base" "$n")" \
        --initial-advertise-peer-urls "$(peer_url "$base" "$n")" \
        --initial-cluster "$(IFS=,; echo "${initial[*]}")" \
        --initial-cluster-token "atoll-$base" \
        --initial-cluster-state new \
        --logger zap \
        </dev/null >>"$dir/m$n.log" 2>&1 &
    echo $! >"$dir/m$n.pid"
}

# Waits until member N serves a linearizable read (that needs a quorum). With
# authentication enabled the read is refused, but only after the quorum
# answered, so a refusal counts as ready.
wait_member() {
    local dir=$1 n=$2 base deadline output
    base=$(base_of "$dir")
    deadline=$((SECONDS + 30))
    while true; do
        if output=$(ETCDCTL_API=3 "$ETCDCTL" --endpoints "$(client_url "$base" "$n")" \
            --command-timeout 1s get /readiness-probe 2>&1); then
            return 0
        fi
        case $output in
            *"user name is empty"* | *"permission denied"* | *"invalid auth token"*) return 0 ;;
        esac
        running "$dir" "$n" || die "member $n exited; see $dir/m$n.log"
        ((SECONDS < deadline)) || die "member $n not ready within 30 s: $output"
        sleep 0.1
    done
}

kill_member() {
    local dir=$1 n=$2 pid
    [[ -f $dir/m$n.pid ]] || return 0
    pid=$(cat "$dir/m$n.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$dir/m$n.pid"
}

cmd_start() {
    local dir=$1 base=$2 n port
    [[ $base =~ ^[0-9]+$ ]] && ((base > 1024 && base < 65530)) || die "bad base port $base"
    ensure_etcd
    [[ -e $dir/base ]] && die "$dir holds a cluster already; stop it first"
    for ((port = base; port < base + 2 * MEMBERS; port++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use"
        fi
    done
    mkdir -p "$dir"
    echo "$base" >"$dir/base"
    for ((n = 0; n < MEMBERS; n++)); do start_member "$dir" "$n"; done
    for ((n = 0; n < MEMBERS; n++)); do wait_member "$dir" "$n"; done
    endpoints "$base"
}

cmd_stop() {
    local dir=$1 n
    [[ -f $dir/base ]] || return 0
    for ((n = 0; n < MEMBERS; n++)); do kill_member "$dir" "$n"; done
    rm -rf "$dir"
}

cmd_leader() {
    local dir=$1 base n status
    base=$(base_of "$dir")
    for ((n = 0; n < MEMBERS; n++)); do
        running "$dir" "$n" || continue
        # Fields: endpoint, ID, version, db size, is leader, is learner, ...
        status=$(ETCDCTL_API=3 "$ETCDCTL" --endpoints "$(client_url "$base" "$n")" \
            --command-timeout 1s endpoint status 2>/dev/null) || continue
        if [[ $(echo "$status" | awk -F', ' '{print $5}') == true ]]; then
            echo "$n"
            return 0
        fi
    done
    die "no leader among the running members"
}

member_arg() {
    [[ $1 =~ ^[0-2]$ ]] || die "member must be 0, 1 or 2, not $1"
}

[[ $# -ge 2 ]] || usage
case $1 in
    start) [[ $# -eq 3 ]] || usage; cmd_start "$2" "$3" ;;
    stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
    kill-member) [[ $# -eq 3 ]] || usage; member_arg "$3"; kill_member "$2" "$3" ;;
    start-member)
        [[ $# -eq 3 ]] || usage
        member_arg "$3"
        start_member "$2" "$3"
        wait_member "$2" "$3"
        ;;
    leader) [[ $# -eq 2 ]] || usage; cmd_leader "$2" ;;
    *) usage ;;
esac
