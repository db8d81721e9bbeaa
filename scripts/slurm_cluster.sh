#!/usr/bin/env bash
# A private SLURM test cluster on this machine: slurmctld + N slurmd "nodes" on localhost,
# with munge and (when it can) slurmdbd + MariaDB so that `sacct` works.
#
#   scripts/slurm_cluster.sh start     # install if needed, start, wait until nodes are idle
#   scripts/slurm_cluster.sh status    # daemons and `sinfo`; exit 0 only if the cluster answers
#   scripts/slurm_cluster.sh stop      # stop exactly the daemons this script started (by PID)
#   source "$(scripts/slurm_cluster.sh env)"   # point sinfo/sbatch/... at it (sets SLURM_CONF)
#
# Everything lives in $DALLE3_SLURM_DIR (default /tmp/dalle3-slurm): configs, munge key and
# socket, state, logs and one pid file per daemon. Nothing under /etc is touched except one
# line in /etc/hosts that makes the node names resolve (MASTER_ADDR=node1 must resolve).
#
# Why accounting matters: submitit (Hydra's SLURM launcher) learns that a job died from
# `sacct`; without accounting a crashed job leaves it waiting forever. So start runs
# slurmdbd on a private MariaDB. If that cannot be installed or started it falls back to
# AccountingStorageType=accounting_storage/none (sacct then fails and submitit only sees
# jobs that write their result) and says so; DALLE3_SLURM_ACCOUNTING=dbd|none forces a mode.
#
# Knobs (env): DALLE3_SLURM_DIR, DALLE3_SLURM_NODES (2), DALLE3_SLURM_CPUS (CPUs advertised
# per node, 4), DALLE3_SLURM_PORT (17000: slurmctld; nodes use 17001.., slurmdbd +10,
# MariaDB +11), DALLE3_SLURM_ACCOUNTING (auto|dbd|none), DALLE3_SLURM_INSTALL (1: apt-get
# install missing packages), DALLE3_SLURM_TIMEOUT (seconds to wait for idle nodes, 90).
set -euo pipefail

DIR=${DALLE3_SLURM_DIR:-/tmp/dalle3-slurm}
NODES=${DALLE3_SLURM_NODES:-2}
CPUS=${DALLE3_SLURM_CPUS:-4}
PORT=${DALLE3_SLURM_PORT:-17000}
ACCOUNTING=${DALLE3_SLURM_ACCOUNTING:-auto}
INSTALL=${DALLE3_SLURM_INSTALL:-1}
TIMEOUT=${DALLE3_SLURM_TIMEOUT:-90}
CLUSTER=dalle3test
DBD_PORT=$((PORT + 10))
DB_PORT=$((PORT + 11))
export SLURM_CONF=$DIR/etc/slurm.conf

say() { echo "slurm_cluster: $*" >&2; }
die() { say "$*"; exit 1; }
nodes() { local i; for ((i = 1; i <= NODES; i++)); do echo "node$i"; done; }

# ---------------------------------------------------------------- processes we own
# A pid file holds the pid of a daemon started in the foreground (-D/-F) by this script;
# "ours" means that pid is alive and still runs the program we started.
pid_of() { [[ -s $DIR/run/$1.pid ]] && cat "$DIR/run/$1.pid" || true; }
alive() {
    local pid; pid=$(pid_of "$1")
    [[ -n $pid ]] && [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

launch() {  # name program args... : run in the background in its own session, remember the pid
    local name=$1; shift
    setsid "$@" >>"$DIR/log/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

stop_one() {  # name pattern
    local name=$1 pattern=$2 pid i
    pid=$(pid_of "$name")
    if [[ -n $pid ]] && alive "$name" "$pattern"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do alive "$name" "$pattern" || break; sleep 0.2; done
        if alive "$name" "$pattern"; then say "$name ($pid) ignored SIGTERM; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$DIR/run/$name.pid"
}

# ---------------------------------------------------------------- install
need_pkgs() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    if [[ $ACCOUNTING != none ]]; then
        command -v slurmdbd >/dev/null || missing+=(slurmdbd)
        command -v mariadbd >/dev/null || missing+=(mariadb-server-core)
        command -v my_print_defaults >/dev/null || missing+=(mariadb-client-core)  # for mariadb-install-db
    fi
    echo "${missing[@]:-}"
}

install() {
    local missing; missing=$(need_pkgs)
    [[ -z $missing ]] && return 0
    [[ $INSTALL == 1 ]] || die "missing: $missing (DALLE3_SLURM_INSTALL=0)"
    command -v apt-get >/dev/null || die "missing: $missing and no apt-get to install them"
    local sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
    say "installing $missing"
    # mariadb-server-core has the server binary without the service scripts: nothing is
    # started behind our back. Services of slurm packages are not started either.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing \
            >"$DIR/log/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing \
            >>"$DIR/log/apt.log" 2>&1 || say "apt-get install failed (see $DIR/log/apt.log)"
    fi
}

# ---------------------------------------------------------------- configuration
write_hosts() {
    local n missing=()
    for n in $(nodes); do getent hosts "$n" >/dev/null || missing+=("$n"); done
    [[ ${#missing[@]} == 0 ]] && return 0
    if [[ -w /etc/hosts ]]; then
        echo "127.0.0.1 ${missing[*]}  # dalle3 slurm test cluster" >>/etc/hosts
    else
        die "node names ${missing[*]} do not resolve and /etc/hosts is not writable"
    fi
}

write_conf() {  # accounting: dbd | none
    local acct=$1 me; me=$(id -un)
    mkdir -p "$DIR"/{etc,state,spool,log,run,munge}
    {
        echo "# Written by scripts/slurm_cluster.sh; private test cluster, rewritten on every start."
        echo "ClusterName=$CLUSTER"
        echo "SlurmctldHost=localhost(127.0.0.1)"
        echo "SlurmctldPort=$PORT"
        echo "SlurmUser=$me"
        echo "SlurmdUser=$me"
        echo "AuthType=auth/munge"
        # cred_expire also sets how long a requeued job waits before it may start again
        # (120 s by default): short here so the requeue test does not idle for minutes.
        echo "AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10"
        echo "CryptoType=crypto/munge"
        echo "StateSaveLocation=$DIR/state"
        echo "SlurmdSpoolDir=$DIR/spool/%n"
        echo "SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid"
        echo "SlurmdPidFile=$DIR/run/slurmd-%n.daemon.pid"
        echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
        echo "SlurmdLogFile=$DIR/log/slurmd-%n.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "MpiDefault=none"
        echo "SwitchType=switch/none"
        echo "SchedulerType=sched/backfill"
        # Look at pending jobs every 2 s (default 60/30 s): a requeued job becomes eligible
        # only after cred_expire and then waits for the next scheduling pass.
        echo "SchedulerParameters=sched_interval=2,bf_interval=2"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_CPU"
        echo "ReturnToService=2"
        echo "SlurmdParameters=config_overrides"
        echo "KillWait=5"
        echo "MinJobAge=600"
        echo "InactiveLimit=0"
        echo "JobRequeue=1"
        echo "JobAcctGatherType=jobacct_gather/none"
        if [[ $acct == dbd ]]; then
            echo "AccountingStorageType=accounting_storage/slurmdbd"
            echo "AccountingStorageHost=localhost"
            echo "AccountingStoragePort=$DBD_PORT"
            # For slurmdbd connections the munge socket is given here, not by AuthInfo.
            echo "AccountingStoragePass=$DIR/munge/munge.socket"
        else
            echo "AccountingStorageType=accounting_storage/none"
            echo "JobCompType=jobcomp/filetxt"
            echo "JobCompLoc=$DIR/log/jobcomp.txt"
        fi
        echo "NodeName=node[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((PORT + 1))-$((PORT + NODES)) CPUs=$CPUS State=UNKNOWN"
        echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
    } >"$DIR/etc/slurm.conf"
    {
        echo "AuthType=auth/munge"
        echo "AuthInfo=socket=$DIR/munge/munge.socket"
        echo "DbdHost=localhost"
        echo "DbdPort=$DBD_PORT"
        echo "SlurmUser=$me"
        echo "PidFile=$DIR/run/slurmdbd.daemon.pid"
        echo "LogFile=$DIR/log/slurmdbd.log"
        echo "StorageType=accounting_storage/mysql"
        echo "StorageHost=127.0.0.1"
        echo "StoragePort=$DB_PORT"
        echo "StorageUser=slurm"
        echo "StoragePass=dalle3-test"
        echo "StorageLoc=slurm_acct_db"
    } >"$DIR/etc/slurmdbd.conf"
    chmod 600 "$DIR/etc/slurmdbd.conf"
    echo "export SLURM_CONF=$DIR/etc/slurm.conf" >"$DIR/env.sh"
}

# ---------------------------------------------------------------- daemons
wait_for() {  # seconds description command...
    local secs=$1 what=$2 i; shift 2
    for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    say "timed out after ${secs}s waiting for $what"; return 1
}

start_munge() {
    alive munged munged && return 0
    if [[ ! -s $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 700 "$DIR/munge"; chmod 400 "$DIR/munge/munge.key"
    # --force: the private folder may sit under /tmp, whose permissions munged distrusts.
    launch munged munged -F --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.daemon.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
    wait_for 10 munged test -S "$DIR/munge/munge.socket"
}

start_mariadb() {
    alive mariadbd mariadbd && return 0
    local data=$DIR/mysql
    if [[ ! -d $data/mysql ]]; then
        mkdir -p "$data"
        mariadb-install-db --no-defaults --datadir="$data" --user="$(id -un)" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || { say "mariadb-install-db failed"; return 1; }
    fi
    cat >"$DIR/etc/mariadb-init.sql" <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'dalle3-test';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'dalle3-test';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
    # Small buffers: it holds a handful of job records.
    launch mariadbd mariadbd --no-defaults --datadir="$data" --user="$(id -un)" --bind-address=127.0.0.1 \
        --port="$DB_PORT" --socket="$DIR/run/mariadb.sock" --pid-file="$DIR/run/mariadbd.daemon.pid" \
        --log-error="$DIR/log/mariadb.log" --init-file="$DIR/etc/mariadb-init.sql" --skip-name-resolve \
        --innodb-buffer-pool-size=16M --innodb-log-file-size=8M --performance-schema=OFF \
        --innodb_lock_wait_timeout=900 --max-connections=50
    wait_for 30 MariaDB test -S "$DIR/run/mariadb.sock"
}

start_slurmdbd() {
    alive slurmdbd slurmdbd && return 0
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    launch slurmdbd slurmdbd -D
    wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
}

start_slurm() {
    local n
    if ! alive slurmctld slurmctld; then
        # -c: no state from an earlier run (jobs, node states) is recovered.
        launch slurmctld slurmctld -D -c -i -f "$SLURM_CONF"
    fi
    wait_for 30 slurmctld scontrol ping
    for n in $(nodes); do
        alive "slurmd-$n" slurmd || launch "slurmd-$n" slurmd -D -N "$n" -f "$SLURM_CONF"
    done
}

nodes_idle() {
    local states; states=$(sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
    [[ $(grep -c ' idle$' <<<"$states") -ge $NODES ]]
}

running() { alive slurmctld slurmctld && scontrol ping >/dev/null 2>&1 && nodes_idle_or_busy; }
nodes_idle_or_busy() { [[ $(sinfo -h -N -o '%t' 2>/dev/null | grep -cE '^(idle|mix|alloc|comp)') -ge $NODES ]]; }

# ---------------------------------------------------------------- commands
cmd_start() {
    mkdir -p "$DIR"/{etc,state,spool,log,run,munge}
    if running; then say "already running (SLURM_CONF=$SLURM_CONF)"; return 0; fi
    install
    for b in slurmctld slurmd sinfo munged; do command -v $b >/dev/null || die "$b is not installed"; done
    write_hosts
    local acct=$ACCOUNTING t0=$SECONDS
    if [[ $acct == auto ]]; then
        if command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v my_print_defaults >/dev/null
        then acct=dbd; else acct=none; fi
    fi
    write_conf "$acct"
    start_munge || die "munged did not start (see $DIR/log/munged.out)"
    if [[ $acct == dbd ]]; then
        if ! { start_mariadb && start_slurmdbd; }; then
            [[ $ACCOUNTING == dbd ]] && die "accounting requested but MariaDB/slurmdbd did not start (see $DIR/log)"
            say "WARNING: MariaDB/slurmdbd did not start (see $DIR/log); running without accounting: sacct will fail"
            stop_one slurmdbd slurmdbd; stop_one mariadbd mariadbd
            acct=none
            write_conf none
        fi
    fi
    echo "$acct" >"$DIR/run/accounting"
    start_slurm
    if ! wait_for "$TIMEOUT" "idle nodes" nodes_idle; then
        sinfo -N >&2 || true
        tail -n 20 "$DIR/log/slurmctld.log" >&2 || true
        die "nodes did not become idle; logs in $DIR/log"
    fi
    say "up in $((SECONDS - t0))s: $NODES nodes, accounting=$acct; export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
    local n
    # Jobs first, so that no step outlives its slurmd; only jobs of this private cluster.
    if alive slurmctld slurmctld; then scancel --full --quiet --user="$(id -un)" 2>/dev/null || true; sleep 1; fi
    for n in $(nodes); do stop_one "slurmd-$n" slurmd; done
    stop_one slurmctld slurmctld
    stop_one slurmdbd slurmdbd
    stop_one mariadbd mariadbd
    stop_one munged munged
    say "stopped"
}

cmd_status() {
    local d n
    for d in munged mariadbd slurmdbd slurmctld $(for n in $(nodes); do echo "slurmd-$n"; done); do
        if alive "$d" "${d%%-*}"; then echo "$d: running (pid $(pid_of "$d"))"; else echo "$d: stopped"; fi
    done
    echo "accounting: $(cat "$DIR/run/accounting" 2>/dev/null || echo unknown)"
    echo "SLURM_CONF=$SLURM_CONF"
    sinfo -N 2>/dev/null && running
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "$DIR/env.sh" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
