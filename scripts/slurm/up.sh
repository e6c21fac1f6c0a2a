#!/usr/bin/env bash
# A single-node SLURM on this machine, for `make test-slurm`: scripts/slurm/up.sh [RECORD], later
# scripts/slurm/down.sh [RECORD].
#
# Idempotent. Where a controller already answers (`sinfo`), nothing is installed or started and
# down.sh will stop nothing. Otherwise (as root, Debian/Ubuntu): installs munge, slurmctld, slurmd,
# slurm-client, and slurmdbd with mariadb-server (for sacct, which submitit reads job states from)
# with apt-get when missing, writes /etc/slurm/slurm.conf for this host (only if
# there is none, or the one there is ours), starts munged (unless one runs), a MariaDB of its own
# (data in $STATE/db, 127.0.0.1:$DB_PORT), slurmdbd, slurmctld and slurmd,
# and appends the pids of exactly what it started to RECORD (default $STATE/started), which
# down.sh reads: give each caller its own RECORD, and each stops only what its own up.sh started.
#
# The test cluster: this host is the controller and one node (its CPUs and memory as `slurmd -C`
# reports them), two partitions over it: `batch` (the default) and `urgent`, whose jobs preempt
# batch jobs (PreemptMode=REQUEUE: SLURM sends the job's --signal, waits GraceTime, requeues).
set -euo pipefail

STATE=${DRSOM_SLURM_STATE:-/var/tmp/drsom-slurm}
RECORD=${1:-$STATE/started}
CONF=/etc/slurm/slurm.conf
MARK="# written by drsom scripts/slurm/up.sh"
DB_PORT=${DRSOM_SLURM_DB_PORT:-3307}
DB_PASS=drsom-test   # a throwaway database on the loopback interface, for this test cluster only

say() { echo "slurm-up: $*"; }
fail() { echo "slurm-up: error: $*" >&2; exit 1; }
answers() { timeout 10 sinfo -h -o %P >/dev/null 2>&1; }

if command -v sinfo >/dev/null && answers; then
    say "a SLURM controller already answers; using it as it is (nothing started)"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "no SLURM controller answers, and starting one needs root"

missing=""
for tool in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
    command -v $tool >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null || fail "no$missing here and no apt-get to install them"
    packages="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
    say "installing $packages (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $packages >/dev/null
fi

mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm
: >>"$RECORD"
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script: not touching it (start that cluster)"
fi

host=$(hostname -s)
node=$(slurmd -C | head -1)                 # NodeName=<host> CPUs=... RealMemory=...
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
mem=$((mem * 9 / 10))                       # leave the OS some room
cat >"$CONF" <<CONF
$MARK
# A single-node test cluster: this host is the controller and the only node.
ClusterName=drsom-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only once its step credentials expire (default 120 s): 10 s.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$host
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerParameters=sched_interval=2,bf_interval=2
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=10
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=batch Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=60
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF

cat >/etc/slurm/slurmdbd.conf <<DBD
$MARK
AuthType=auth/munge
DbdHost=$host
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
DBD
chmod 600 /etc/slurm/slurmdbd.conf

started() { echo "$1 $2" >>"$RECORD"; }   # name pid

if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    started munged "$(cat /run/munge/munged.pid)"
fi
# -D and the like: in the foreground, so that $! is the daemon itself; setsid: out of this
# shell's process group.
db() { mariadb --no-defaults -S "$STATE/db.sock" -u root "$@"; }
if ! db -e "select 1" >/dev/null 2>&1; then
    if [ ! -d "$STATE/db/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$STATE/db" \
            --auth-root-authentication-method=socket >"$STATE/db-install.log" 2>&1 \
            || fail "mariadb-install-db failed; see $STATE/db-install.log"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/db" --socket="$STATE/db.sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$STATE/db.pid" \
        >>"$STATE/db.log" 2>&1 </dev/null &
    started mariadbd $!
    for _ in $(seq 100); do db -e "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
    db -e "select 1" >/dev/null || fail "mariadbd does not start; see $STATE/db.log"
    db -e "create database if not exists slurm_acct_db;
        create user if not exists 'slurm'@'127.0.0.1' identified by '$DB_PASS';
        grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"
fi
if ! pgrep -x slurmdbd >/dev/null; then
    setsid slurmdbd -D >>"$STATE/slurmdbd.out" 2>&1 </dev/null &
    started slurmdbd $!
fi
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -n list cluster >/dev/null 2>&1 || fail "slurmdbd does not answer; see $STATE/slurmdbd.log"
sacctmgr -n list cluster format=cluster | grep -qw drsom-test \
    || sacctmgr -i add cluster drsom-test >/dev/null
if ! pgrep -x slurmctld >/dev/null; then
    setsid slurmctld -D -c >>"$STATE/slurmctld.out" 2>&1 </dev/null &
    started slurmctld $!
fi
for _ in $(seq 100); do answers && break; sleep 0.2; done
answers || fail "slurmctld does not answer; see $STATE/slurmctld.log"
if ! pgrep -x slurmd >/dev/null; then
    setsid slurmd -D >>"$STATE/slurmd.out" 2>&1 </dev/null &
    started slurmd $!
fi
for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %T | head -1)
    case $state in idle*|mixed*|alloc*) break ;; esac
    sleep 0.2
done
case $state in idle*|mixed*|alloc*) ;; *) fail "node $host is '$state'; see $STATE/slurmd.log" ;; esac
say "cluster up: node $host ($cpus CPUs, ${mem} MB), partitions batch (default) and urgent"
