#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (as root), for the tests and demos that submit pilots:
# Debian's slurm-wlm (22.05) and munge, one node (this host, with its real CPUs and memory), one partition
# `debug`. The daemons are started directly, in the background, with pid files (CI has no systemd).
#
#   bash scripts/setup-slurm.sh            install the packages if missing, configure, start, wait for the node
#   bash scripts/setup-slurm.sh --install  only the Debian packages (scripts/setup-tests.sh: no apt-get in pytest)
#   bash scripts/setup-slurm.sh --start    configure and start, never apt-get
#   bash scripts/setup-slurm.sh --stop     cancel every job, stop slurmd, slurmctld and the munged started here
#   bash scripts/setup-slurm.sh --status   exit status 0 when the daemons run and the node answers
#   bash scripts/setup-slurm.sh --start --lease PID    as --start, for the process PID (a test session)
#   bash scripts/setup-slurm.sh --release PID          end PID's lease; stop the cluster if it was the last one
#
# Leases let several test sessions on one machine share the cluster (the tests' `slurm` fixture takes one
# for the pytest process): a cluster that a lease started is stopped when the last live lease is released;
# a cluster started without --lease (by hand, by a demo) is never stopped by --release. Leases of processes
# that died are ignored. --start, --stop and --release hold a lock, so concurrent calls take turns.
#
# Idempotent: daemons already up are left alone (unless slurm.conf changed, then slurmctld and slurmd are
# restarted); stale pid files are replaced. Everything Slurm writes is below $CVMFS_PILOT_SLURM_DIR
# (default /var/lib/cvmfs-pilot-slurm): state/ (slurmctld), spool/ (slurmd), log/ (daemon logs and the job
# completion log that `sacct -c` reads), run/ (pid files). The configuration is /etc/slurm/slurm.conf, where
# every Slurm command looks for it; a slurm.conf that this script did not write is never overwritten.
#
# Job states: slurmdbd (and MariaDB) would be heavy for a test node, and Slurm 22.05 has no file-based
# accounting storage any more (accounting_storage/filetxt is gone; only none and slurmdbd are shipped). So:
# AccountingStorageType=accounting_storage/none, and JobCompType=jobcomp/filetxt writes one line per finished
# job, which `sacct --completion` (-c) reads without slurmdbd (plain `sacct` says accounting is disabled).
# Only root can run it: the filetxt plugin opens the log for appending even in sacct, and the log is not
# writable by users (it must not be: anyone could forge job records).
# Live states come from `squeue -t all` / `scontrol show job`; MinJobAge=300 keeps finished jobs visible there
# for five minutes.
set -euo pipefail
base="${CVMFS_PILOT_SLURM_DIR:-/var/lib/cvmfs-pilot-slurm}"
conf=/etc/slurm/slurm.conf
marker="# Written by cvmfs-pilot scripts/setup-slurm.sh"
timeout="${CVMFS_PILOT_SLURM_TIMEOUT:-60}"   # seconds for the node to become idle, or for jobs to end on --stop
test_user="${CVMFS_PILOT_TEST_USER:-cvmfspilot}"
state_dir="$base/state" spool_dir="$base/spool" log_dir="$base/log" run_dir="$base/run"
munge_run="$run_dir/munge"        # munged runs as munge: its pid file lives in a directory of its own
lease_dir="$run_dir/leases"       # one file per lease, named by the pid, holding the process's start time
leased="$run_dir/started-by-lease"  # present while the running cluster was started by a lease
debian_packages=(slurm-wlm munge)

say() { echo "setup-slurm: $*"; }
die() { echo "setup-slurm: error: $*" >&2; exit 1; }

install_packages() {
    local missing=() p
    for p in "${debian_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian enables the systemd units; where systemd runs, stop what the packages started: this script
    # starts its own daemons with its own configuration.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        local svc
        for svc in slurmd slurmctld; do
            systemctl is-active --quiet "$svc" 2>/dev/null && systemctl stop "$svc" || true
        done
    fi
}

require_packages() {
    local cmd
    for cmd in munged munge unmunge slurmctld slurmd sinfo sbatch; do
        command -v "$cmd" >/dev/null 2>&1 \
            || die "$cmd is missing: run 'bash scripts/setup-slurm.sh --install' (scripts/setup-tests.sh does) as root"
    done
}

# The pid in pid file $1 if it names a live process (not a zombie) whose command is $2.
live_pid() {
    local pid stat
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"   # the fields after "(comm) ": state first
    case "${stat%% *}" in Z|X|x) return 1 ;; esac
    echo "$pid"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

node_name() { hostname -s; }

node_state() { sinfo -h -N -n "$(node_name)" -o %T 2>/dev/null | head -n1; }

# Whether slurmctld has heard from the running slurmd (and does not just remember the node's state from an
# earlier run): the node's SlurmdStartTime is the local slurmd's start time.
slurmd_registered() {
    local started
    started="$(scontrol show slurmd 2>/dev/null | sed -n 's/^Boot time *= *//p')"
    [ -n "$started" ] && scontrol show node "$(node_name)" 2>/dev/null | grep -q "SlurmdStartTime=$started"
}

# slurm.conf for this machine, on stdout.
write_conf() {
    local node cpus sockets cores threads mem_mb real_mb line
    node="$(node_name)"
    # `slurmd -C` prints the hardware as slurmd will see it (needs no configuration): CPUs, sockets, cores,
    # threads and RealMemory (MiB). Fall back to nproc and /proc/meminfo.
    line="$(slurmd -C 2>/dev/null | head -n1 || true)"
    field() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$line"; }
    cpus="$(field CPUs)" sockets="$(field SocketsPerBoard)" cores="$(field CoresPerSocket)"
    threads="$(field ThreadsPerCore)" mem_mb="$(field RealMemory)"
    if [ -z "$cpus" ] || [ -z "$mem_mb" ]; then
        cpus="$(nproc)" sockets="" cores="" threads=""
        mem_mb="$(( $(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024 ))"
    fi
    # 95 %: slurmd drains a node whose memory is below RealMemory, and a VM's total memory may shrink a little.
    real_mb=$(( mem_mb * 95 / 100 ))
    local layout=""
    [ -n "$sockets" ] && [ -n "$cores" ] && [ -n "$threads" ] \
        && layout=" Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
    cat <<EOF
$marker for this host ($node).
# A test cluster: one node, one partition; see the script for the choices. Do not edit: it is rewritten.
ClusterName=cvmfs-pilot
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# slurmd and slurmctld log errors about mpi/pmix at start: harmless (Debian ships the plugin, not libpmix).
MpiDefault=none
SwitchType=switch/none
ReturnToService=2

StateSaveLocation=$state_dir
SlurmdSpoolDir=$spool_dir
SlurmctldPidFile=$run_dir/slurmctld.pid
SlurmdPidFile=$run_dir/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Process tracking: proctrack/linuxproc follows each job's process tree through /proc (parent pids) and
# signals every process in it, including those in other sessions or process groups (scancel: SIGCONT and
# SIGTERM, then SIGKILL after KillWait). proctrack/cgroup works on these VMs too (Slurm's cgroup/v1 freezer
# hierarchy, checked), but is not used: Slurm 22.05 needs either cgroup v1 or a cgroup v2 subtree delegated by
# systemd to slurmd, and a stock Debian 12 host is cgroup v2 only while CI has no systemd; linuxproc behaves
# the same on every host. And a process that re-parents itself to init escapes linuxproc (cgroup would kill
# it silently at the job's end): the pilot must leak none, and here the tests can see it if it does.
# Not proctrack/pgid: it only reaches the job's process group, and the pilot runs its job in a group of its own.
ProctrackType=proctrack/linuxproc
# CPU binding: the job sees the cores it was allocated (nproc, sched_getaffinity), as at real sites.
TaskPlugin=task/affinity

SchedulerType=sched/backfill
# Schedule a batch job when it is submitted, not up to 3 s later (the default delay, for high throughput).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Jobs finished less than MinJobAge seconds ago stay visible in squeue -t all and scontrol show job.
MinJobAge=300
# scancel and time limits: SIGTERM to every process of the job, SIGKILL KillWait seconds later.
KillWait=10
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0

# No slurmdbd: see the script. sacct --completion reads $log_dir/jobcomp.log.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$log_dir/jobcomp.log

NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus${layout} RealMemory=$real_mb State=UNKNOWN
# OverSubscribe=FORCE:4: up to four jobs share each core, so that tests can run several pilots at once on
# a small machine (each job still gets one core of its own by default).
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

log_tails() {
    local f
    for f in "$log_dir/slurmctld.log" "$log_dir/slurmd.log" "$log_dir/slurmctld.out" "$log_dir/slurmd.out" \
             "$log_dir/munged.out" /var/log/munge/munged.log; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f ---" >&2
        tail -n 25 "$f" >&2
    done
}

start_munged() {
    if munge_works; then
        return
    fi
    [ -s /etc/munge/munge.key ] || {
        say "creating the munge key /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key --force
        chown munge:munge /etc/munge/munge.key
        chmod 0600 /etc/munge/munge.key
    }
    install -d -o munge -g munge -m 0755 /run/munge        # the socket every munge client uses
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 "$munge_run"
    local pid
    if pid="$(live_pid "$munge_run/munged.pid" munged)"; then
        say "munged $pid does not answer; restarting it"
        kill "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$munge_run/munged.pid"
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$munge_run/munged.pid" \
        </dev/null >>"$log_dir/munged.out" 2>&1 9>&- || { log_tails; die "munged did not start"; }
    local i
    for i in $(seq 50); do munge_works && return; sleep 0.1; done
    log_tails
    die "munged started but munge -n | unmunge fails"
}

# start_daemon NAME: start slurmctld or slurmd unless its pid file names a live one.
start_daemon() {
    local name="$1" pid
    if pid="$(live_pid "$run_dir/$name.pid" "$name")"; then
        return
    fi
    rm -f "$run_dir/$name.pid"
    say "starting $name"
    # Both daemonize themselves and write their pid file; their own output goes to log/NAME.out, never to the
    # caller's stdout (pytest would otherwise wait for the pipe to close). Nor do they inherit the lock (fd 9).
    "/usr/sbin/$name" </dev/null >>"$log_dir/$name.out" 2>&1 9>&- || { log_tails; die "$name did not start"; }
    local i
    for i in $(seq 100); do
        live_pid "$run_dir/$name.pid" "$name" >/dev/null && return
        sleep 0.1
    done
    log_tails
    die "$name did not write $run_dir/$name.pid"
}

# stop_pid PIDFILE NAME: SIGTERM, then SIGKILL after 15 s.
stop_pid() {
    local pid i
    pid="$(live_pid "$1" "$2")" || { rm -f "$1"; return 0; }
    say "stopping $2 ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        live_pid "$1" "$2" >/dev/null || { rm -f "$1"; return 0; }  # gone, or a zombie init has not reaped yet
        sleep 0.1
    done
    say "$2 ($pid) ignored SIGTERM for 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

wait_for_node() {
    local node deadline state resumed=""
    node="$(node_name)"
    deadline=$(( SECONDS + timeout ))
    while :; do
        state="$(node_state || true)"
        case "$state" in
            idle|mixed|allocated) slurmd_registered && break ;;
            down|drained|draining|drain) # not "down*" (not responding yet): a state saved by an earlier run
                if [ -z "$resumed" ]; then
                    say "node $node is $state ($(sinfo -h -N -n "$node" -o %E 2>/dev/null)); resuming it"
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tails
            sinfo -N -l >&2 2>&1 || true
            die "node $node is not idle after ${timeout} s (state: ${state:-unknown}); the daemons' logs are above"
        fi
        sleep 0.2
    done
    echo "$state"
}

check_user() {
    id "$test_user" >/dev/null 2>&1 || { say "no user $test_user: skipping the sbatch check"; return 0; }
    # --test-only: checks authentication, configuration and the partition without queuing a job.
    local out
    if ! out="$(cd / && runuser -u "$test_user" -- sbatch --test-only --wrap=true 2>&1)"; then
        log_tails
        die "$test_user cannot submit jobs: sbatch --test-only said: $out"
    fi
}

# start [PID]: with a PID, take a lease for it.
start() {
    local lease="${1:-}"
    [ "$(id -u)" = 0 ] || die "run as root"
    require_packages
    lock
    if [ -n "$lease" ]; then
        running || touch "$leased"   # started for a lease: the last --release stops it
        take_lease "$lease"
    else
        rm -f "$leased"   # started or claimed by hand: --release never stops it
    fi
    install -d -m 0755 "$base" "$spool_dir" "$log_dir" "$run_dir" /etc/slurm
    install -d -m 0700 "$state_dir"
    # slurmctld appends a line per finished job; sacct --completion (as root) reads it.
    [ -e "$log_dir/jobcomp.log" ] || install -m 0644 /dev/null "$log_dir/jobcomp.log"

    if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
        die "$conf exists and was not written by this script; move it away to let the script configure Slurm"
    fi
    local new changed=""
    new="$(write_conf)"
    if [ "$new" != "$(cat "$conf" 2>/dev/null)" ]; then
        printf '%s\n' "$new" > "$conf.tmp"
        chmod 0644 "$conf.tmp"
        mv "$conf.tmp" "$conf"
        changed=1
        say "wrote $conf"
    fi
    if [ -n "$changed" ]; then  # running daemons read the old file: restart them
        stop_pid "$run_dir/slurmd.pid" slurmd
        stop_pid "$run_dir/slurmctld.pid" slurmctld
    fi

    start_munged
    start_daemon slurmctld
    start_daemon slurmd
    local state
    state="$(wait_for_node)"
    check_user
    say "node $(node_name) is $state; partition debug; $(sinfo -h -o '%c CPUs, %m MB' | head -n1)"
}

# Serialize --start, --stop and --release (file descriptor 9 stays open, and locked, until the script exits;
# the daemons are started with it closed, or they would hold the lock for ever).
lock() {
    install -d -m 0755 "$base" "$run_dir"
    exec 9>"$run_dir/lock"
    flock -w 600 9 || die "another setup-slurm.sh has held $run_dir/lock for 10 minutes"
}

start_time() { local stat; stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1; set -- ${stat##*) }; echo "${20}"; }

# The pids of live leases, other than $1; removes the leases of processes that are gone.
live_leases() {
    local f pid
    for f in "$lease_dir"/*; do
        [ -e "$f" ] || continue
        pid="${f##*/}"
        if [ "$pid" != "${1:-}" ] && [ "$(start_time "$pid" || true)" = "$(cat "$f")" ]; then
            echo "$pid"
        elif [ "$pid" != "${1:-}" ]; then
            rm -f "$f"
        fi
    done
}

take_lease() {
    local pid="$1" started
    started="$(start_time "$pid")" || die "--lease $pid: no such process"
    install -d -m 0755 "$lease_dir"
    echo "$started" > "$lease_dir/$pid"
}

release() {
    local pid="$1" others
    [[ "$pid" =~ ^[0-9]+$ ]] || die "--release needs a pid"
    lock
    rm -f "$lease_dir/$pid"
    others="$(live_leases | wc -l)"
    if [ "$others" -gt 0 ]; then
        say "leaving the cluster running for $others other lease(s)"
    elif [ -e "$leased" ]; then
        stop
    else
        say "leaving the cluster running: it was not started by a lease"
    fi
}

running() {
    live_pid "$run_dir/slurmctld.pid" slurmctld >/dev/null && live_pid "$run_dir/slurmd.pid" slurmd >/dev/null \
        && munge_works && scontrol ping >/dev/null 2>&1 && scontrol show slurmd >/dev/null 2>&1
}

stop() {
    [ "$(id -u)" = 0 ] || die "run as root"
    rm -f "$leased"
    if live_pid "$run_dir/slurmctld.pid" slurmctld >/dev/null && munge_works; then
        local jobs
        jobs="$(squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            say "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            local deadline=$(( SECONDS + timeout ))
            while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] || say "jobs still there after ${timeout} s: $(squeue -h 2>&1)"
        fi
    fi
    stop_pid "$run_dir/slurmd.pid" slurmd
    stop_pid "$run_dir/slurmctld.pid" slurmctld
    stop_pid "$munge_run/munged.pid" munged   # only the munged this script started
}

case "${1:-}" in
    "") install_packages; start ;;
    --install) install_packages ;;
    --start)
        case "${2:-}" in
            "") start ;;
            --lease) [[ "${3:-}" =~ ^[0-9]+$ ]] || die "--lease needs a pid"; start "$3" ;;
            *) die "unknown option $2 (try --help)" ;;
        esac ;;
    --release) release "${2:-}" ;;
    --stop) lock; stop ;;
    --status) running ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown option $1 (try --help)" ;;
esac
