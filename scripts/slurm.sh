#!/usr/bin/env bash
# A one-machine SLURM cluster to run the workflow's SLURM profile against a real scheduler:
# slurmctld, slurmd and slurmdbd with accounting on MariaDB, SLURM 22.05 as Debian bookworm ships it.
#
#   scripts/slurm.sh up      install what is missing (root with apt-get), write the config, start
#                            every daemon, register cluster, account and user, wait until the node is idle
#   scripts/slurm.sh down    stop every daemon this script started
#   scripts/slurm.sh status  exit 0 and print the node's state when the cluster answers
#
# Every daemon listens on and talks to the loopback address only: controller, node daemon and
# accounting daemon bind 127.0.0.1 (slurmctld and slurmdbd through scripts/loopback_bind.c), MariaDB
# listens on 127.0.0.1, munge on a Unix socket, and the node's address is 127.0.0.1. The node declares this machine's CPUs and memory, and 2
# GPUs through gres on placeholder device files made here (no GPU exists), so that `--gpus`
# requests are scheduled as on a GPU partition. Memory is enforced by the cgroup v1 task plugin
# where this kernel allows it, else by SLURM's accounting poll (OverMemoryKill).
set -euo pipefail

CLUSTER=inilora
ACCOUNT=inilora
CONF=/etc/slurm
STATE=/var/lib/inilora-slurm
RUN=/run/inilora-slurm
LOGS=/var/log/inilora-slurm
MARK="# written by inilora scripts/slurm.sh"
PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
DB_PORT=${INILORA_SLURM_DB_PORT:-3306}
GPUS=2

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: $*" >&2; exit 1; }

# pid_alive PIDFILE: its process runs and is the daemon the file names (a stale file's pid may
# have been reused by another process after a reboot)
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in munged|mariadbd|slurmdbd|slurmctld|slurmd) return 0 ;; esac
  return 1
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "$what did not come up within ${seconds} s (logs: $LOGS)"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
    || die "apt-get could not install ${missing[*]}"
}

# The node's name and the check that it resolves to loopback: NoInAddrAny binds every daemon
# and srun to the address the hostname resolves to, which must not be a real interface.
node_name() { hostname -s; }
check_loopback() {
  local addr
  addr=$(getent ahostsv4 "$(node_name)" | awk 'NR==1 {print $1}')
  case "$addr" in
    127.*) ;;
    *) die "hostname $(node_name) resolves to '${addr:-nothing}', not a loopback address; add '127.0.0.1 $(node_name)' to /etc/hosts so that no scheduler traffic leaves this machine" ;;
  esac
}

memory_enforcement() {  # cgroup when this kernel lets a root process limit a cgroup v1 memory group
  local probe=/sys/fs/cgroup/memory/inilora-slurm-probe
  if [ -w /sys/fs/cgroup/memory ] && mkdir "$probe" 2>/dev/null; then
    if echo 104857600 > "$probe/memory.limit_in_bytes" 2>/dev/null \
       && [ "$(cat "$probe/memory.limit_in_bytes")" = 104857600 ]; then
      rmdir "$probe"; echo cgroup; return
    fi
    rmdir "$probe" 2>/dev/null || true
  fi
  echo overmemorykill
}

write_config() {
  local node cpus mem enforce db_pass
  node=$(node_name)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))  # 1 GB for the daemons
  enforce=$(memory_enforcement)
  if [ -f "$CONF/slurm.conf" ] && ! grep -qF "$MARK" "$CONF/slurm.conf"; then
    die "$CONF/slurm.conf exists and was not written by this script; not replacing a site's configuration"
  fi
  install -d -m 0755 "$CONF" "$STATE" "$RUN" "$LOGS"
  install -d -o slurm -g slurm -m 0755 "$STATE/slurmctld" "$LOGS/slurm"
  install -d -m 0755 "$STATE/slurmd"
  [ -s "$STATE/db.pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$STATE/db.pass")
  db_pass=$(cat "$STATE/db.pass")

  # Placeholder GPUs: character devices in the local/experimental major range (240), which no
  # driver owns. SLURM schedules and accounts gres on them and sets CUDA_VISIBLE_DEVICES; nothing
  # can compute on them.
  for i in $(seq 0 $((GPUS - 1))); do
    [ -e "$RUN/gpu$i" ] || mknod -m 0666 "$RUN/gpu$i" c 240 "$i" 2>/dev/null || : > "$RUN/gpu$i"
  done

  local task_plugin gather
  if [ "$enforce" = cgroup ]; then
    task_plugin="task/affinity,task/cgroup"; gather="jobacct_gather/cgroup"
    proctrack="proctrack/cgroup"; gather_params=""
  else
    task_plugin="task/affinity"; gather="jobacct_gather/linux"
    proctrack="proctrack/linuxproc"; gather_params="JobAcctGatherParams=OverMemoryKill"
  fi
  cat > "$CONF/slurm.conf" <<EOF
$MARK: a one-node test cluster on 127.0.0.1
# memory enforcement: $enforce
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
CommunicationParameters=NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurm/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ReturnToService=2
ProctrackType=$proctrack
TaskPlugin=$task_plugin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SchedulerType=sched/backfill
# Start a queued job within a second of the resources freeing (the defaults wait for the next
# scheduling pass: 3 to 7 s here, for every job of a test workflow).
SchedulerParameters=bf_interval=1,sched_min_interval=0
# Accounting through slurmdbd on MariaDB: sacct answers for finished jobs, with their TRES.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
# The plugin puts each job's rule and wildcards in its --comment; keep it in accounting for sacct.
AccountingStoreFlags=job_comment
JobAcctGatherType=$gather
JobAcctGatherFrequency=task=2
$gather_params
JobCompType=jobcomp/none
# A cancelled job's tasks get SIGTERM, then every process of the job SIGKILL after this grace (SLURM's
# default is 30 s; slurmd 22.05 waits at least 5 s whatever it says). The task is the Snakemake that
# runs the rule, which waits for its rule on SIGTERM, so a cancelled fine-tune trains on through the
# grace and resumes from its last periodic checkpoint: the pre-emption test trains long enough for that.
KillWait=3
# Finished jobs stay in slurmctld's memory this long (the plugin falls back to accounting after).
MinJobAge=300
# The GPUs are placeholders ($RUN/gpu*): scheduled, accounted, never computed on.
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF/gres.conf" <<EOF
$MARK: placeholder GPUs, no device behind them
NodeName=$node Name=gpu File=$RUN/gpu[0-$((GPUS - 1))]
EOF
  cat > "$CONF/cgroup.conf" <<EOF
$MARK
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
ConstrainCores=yes
ConstrainDevices=no
EOF
  (umask 077; cat > "$CONF/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurm/slurmdbd.log
EOF
  )
  chown slurm:slurm "$CONF/slurmdbd.conf"
  echo "$enforce" > "$STATE/memory-enforcement"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a running munged (ours or the system's)
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  echo munge >> "$RUN/started"
  wait_for 10 munged sh -c 'munge -n | unmunge'
}

mysql() { mariadb --no-defaults --socket="$RUN/mysqld.sock" -u root "$@"; }

start_mariadb() {
  if ! pid_alive "$RUN/mysqld.pid"; then
    if [ ! -d "$STATE/mysql/mysql" ]; then
      install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
      mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
        --auth-root-authentication-method=socket > "$LOGS/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed ($LOGS/mariadb-install.log)"
    fi
    chown mysql:mysql "$RUN"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$RUN/mysqld.sock" \
      --pid-file="$RUN/mysqld.pid" --log-error="$LOGS/mariadb.log" \
      --innodb-buffer-pool-size=64M --skip-name-resolve < /dev/null > /dev/null 2>&1 &
    echo mariadb >> "$RUN/started"
    wait_for 60 MariaDB mysql -e 'SELECT 1'
  fi
  local pass
  pass=$(cat "$STATE/db.pass")
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_daemon() {  # start_daemon NAME PIDFILE COMMAND...
  local name=$1 pidfile=$2; shift 2
  pid_alive "$pidfile" && return 0
  "$@" || die "$name did not start (logs: $LOGS)"
  echo "$name" >> "$RUN/started"
  wait_for 30 "$name" pid_alive "$pidfile"
}

# slurmctld and slurmdbd bind the wildcard address in 22.05 (NoInAddrAny covers only slurmd and
# the clients); scripts/loopback_bind.c, preloaded into both, turns that bind into one on loopback.
SHIM=$STATE/loopback_bind.so
build_shim() {
  local src
  src="$(dirname "$(readlink -f "$0")")/loopback_bind.c"
  [ -s "$SHIM" ] && [ "$SHIM" -nt "$src" ] && return 0
  command -v cc >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -q gcc libc6-dev >/dev/null 2>&1; } || true
  command -v cc >/dev/null || die "a C compiler is needed for $src (apt-get install gcc)"
  cc -shared -fPIC -O2 -o "$SHIM" "$src" -ldl || die "could not build $SHIM"
}

register() {
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || die "sacctmgr could not register cluster $CLUSTER"
  sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" Description="inilora test" Organization=inilora >/dev/null 2>&1 || true
  local user
  for user in root ${SUDO_USER:-}; do
    sacctmgr -i -Q add user "$user" account="$ACCOUNT" cluster="$CLUSTER" DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
  done
}

node_state() { sinfo -h -N -n "$(node_name)" -o %T 2>/dev/null | head -n 1; }

wait_idle() {
  local state
  for _ in $(seq 120); do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated) say "cluster $CLUSTER up: node $(node_name) $state, $(nproc) CPUs, gres gpu:$GPUS (placeholders), memory enforced by $(cat "$STATE/memory-enforcement")"; return 0 ;;
      down*|drain*|unknown*) scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $(node_name) is '${state:-not answering}', not idle, after 60 s (logs: $LOGS)"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (the daemons, /etc/slurm and cgroups need it): sudo $0 up"
  install_packages
  check_loopback
  local before
  # on a fresh machine none of the files exists yet: under pipefail a bare cat would end the script
  before=$( { cat "$CONF"/{slurm,slurmdbd,cgroup,gres}.conf 2>/dev/null || true; } | md5sum)
  write_config
  if [ -f "$RUN/started" ] && [ "$before" != "$(cat "$CONF"/{slurm,slurmdbd,cgroup,gres}.conf | md5sum)" ]; then
    say "configuration changed: restarting the daemons"
    down
    install -d -m 0755 "$RUN"
  fi
  touch "$RUN/started"
  start_munge
  start_mariadb
  build_shim
  start_daemon slurmdbd "$RUN/slurmdbd.pid" env LD_PRELOAD="$SHIM" /usr/sbin/slurmdbd
  wait_for 30 "slurmdbd's port" sacctmgr -n list cluster
  register
  start_daemon slurmctld "$RUN/slurmctld.pid" env LD_PRELOAD="$SHIM" /usr/sbin/slurmctld
  start_daemon slurmd "$RUN/slurmd.pid" /usr/sbin/slurmd -N "$(node_name)"
  wait_idle
}

stop_pid() {  # stop_pid NAME PIDFILE
  local pid
  pid_alive "$2" || return 0
  pid=$(cat "$2")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || { say "stopped $1"; return 0; }; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  say "killed $1 (did not stop within 20 s)"
}

down() {
  [ "$(id -u)" = 0 ] || die "run as root: sudo $0 down"
  [ -f "$RUN/started" ] || { say "nothing to stop"; return 0; }
  scancel --quiet --state=PENDING,RUNNING --full 2>/dev/null || true
  stop_pid slurmd "$RUN/slurmd.pid"
  stop_pid slurmctld "$RUN/slurmctld.pid"
  stop_pid slurmdbd "$RUN/slurmdbd.pid"
  grep -qx mariadb "$RUN/started" && stop_pid mariadb "$RUN/mysqld.pid"
  grep -qx munge "$RUN/started" && stop_pid munged /run/munge/munged.pid
  # slurmstepd outlives slurmd by design; a stopped cluster leaves none behind.
  pkill -x slurmstepd 2>/dev/null || true
  rm -f "$RUN/started"
}

status() {
  local state
  state=$(node_state)
  [ -n "$state" ] || { say "down (start it with: make slurm-up)"; return 1; }
  say "node $(node_name) $state"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
