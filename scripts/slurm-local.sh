#!/usr/bin/env bash
# A private one-node SLURM on this machine, for trying the cluster path and for its tests (tests/slurm/).
#
#   sudo bash scripts/slurm-local.sh up       # start it; returns once `sinfo` answers and sacct works
#   source /tmp/slurm-local/env               # then sbatch, squeue, sacct, scancel and submitit use it
#   sudo bash scripts/slurm-local.sh status   # sinfo + squeue; exit 1 when it is not up
#   sudo bash scripts/slurm-local.sh down     # cancel its jobs, stop its daemons (logs stay for reading)
#
# Everything lives in one state folder (SLURM_LOCAL_DIR, default /tmp/slurm-local): slurm.conf, cgroup.conf,
# slurmdbd.conf, a munge key and socket, spool folders, a MariaDB data folder, logs and pid files. Every daemon
# listens on 127.0.0.1 only, on ports of its own (SLURM_LOCAL_PORT, default 16817: slurmctld; +1 slurmd;
# +2 MariaDB; +3 slurmdbd), so the machine's own services, if any, are not touched. One partition, `debug`, one
# node, `localhost`, with SLURM_LOCAL_CPUS CPUs (default: all). Accounting is real (slurmdbd over MariaDB), so
# `sacct` answers as on a site's cluster: submitit polls it to learn that a job ended without a result.
#
# Tuned for short jobs: the scheduler runs at every submission and at least every second, and a requeued job
# may start again after 5 s instead of SLURM's 120 (AuthInfo cred_expire). Each job is bound to the CPUs it
# was given (task/affinity), so with cpus_per_task=1 a job's torch runs one thread, as on a site's cluster. Needs root (the daemons run as
# root here) and Debian's slurm-wlm, slurmdbd, munge and mariadb-server, which `up` installs with apt-get when
# they are missing. `up` on a running cluster only checks it; `down` on a stopped one does nothing.
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
PORT=${SLURM_LOCAL_PORT:-16817}
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}
CONF=$STATE/slurm.conf
PACKAGES="slurm-wlm slurmdbd munge mariadb-server"
DB_SOCKET=$STATE/db/mariadb.sock
DB_PASS=slurm-local # the database listens on 127.0.0.1 only and holds nothing but this cluster's records

die() {
	echo "slurm-local: $*" >&2
	exit 1
}

install_packages() {
	local cmd missing=0
	for cmd in slurmctld slurmd slurmdbd sacct munged mariadbd mariadb-install-db; do
		command -v "$cmd" >/dev/null || missing=1
	done
	[ $missing = 0 ] && return
	command -v apt-get >/dev/null || die "install Debian's $PACKAGES (there is no apt-get here)"
	echo "slurm-local: installing $PACKAGES with apt-get"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null
}

write_config() {
	mkdir -p "$STATE"/{munge,ctld,spool,db}
	chmod 755 "$STATE" "$STATE/munge" # every user may talk to the cluster through munged's socket; the key stays root's
	if [ ! -s "$STATE/munge/munge.key" ]; then
		head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
		chmod 400 "$STATE/munge/munge.key"
	fi
	local auth="AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=5"
	cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a private one-node cluster on 127.0.0.1.
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
$auth
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 3))
AccountingStoragePass=$STATE/munge/munge.socket
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
	cat >"$STATE/cgroup.conf" <<EOF
# Written by scripts/slurm-local.sh: no cgroup plugin is configured (proctrack/linuxproc, task/affinity binds
# each job to its CPUs), so jobs run in slurmd's own cgroup, which works inside containers too.
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
	(
		umask 077 # slurmdbd refuses a config that others can read (it holds the database password)
		cat >"$STATE/slurmdbd.conf" <<EOF
# Written by scripts/slurm-local.sh: accounting for the local cluster, in a private MariaDB.
$auth
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 3))
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 2))
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
	)
	cat >"$STATE/env" <<EOF
# source this file to use the local cluster (written by scripts/slurm-local.sh)
export SLURM_CONF=$CONF
EOF
}

alive() { # pidfile
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() { # what, command...
	local what=$1 t0=$SECONDS
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS - t0 < WAIT_S)) || die "$what did not answer within ${WAIT_S}s; logs in $STATE"
		sleep 0.3
	done
}

sql() {
	mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"
}

answers() {
	SLURM_CONF=$CONF timeout 5 sinfo -h -n localhost -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc|comp)$'
}

start_database() {
	local db=$STATE/db
	if [ ! -d "$db/data/mysql" ]; then
		mariadb-install-db --no-defaults --user=root --datadir="$db/data" --skip-test-db \
			--auth-root-authentication-method=socket >"$db/install.log" 2>&1 ||
			die "mariadb-install-db failed; see $db/install.log"
	fi
	setsid mariadbd --no-defaults --user=root --datadir="$db/data" --socket="$DB_SOCKET" \
		--bind-address=127.0.0.1 --port=$((PORT + 2)) --pid-file="$db/mariadbd.pid" --log-error="$db/mariadbd.log" \
		--innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0 \
		</dev/null >/dev/null 2>&1 &
	wait_for MariaDB sql -e "SELECT 1"
	local host
	for host in localhost 127.0.0.1; do
		sql -e "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$DB_PASS';
			GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';"
	done
}

up() {
	[ "$(id -u)" = 0 ] || die "needs root (its daemons run as root); run it with sudo"
	install_packages
	if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && answers; then
		echo "slurm-local: already up ($STATE); source $STATE/env"
		return
	fi
	down >/dev/null
	local t0=$SECONDS
	write_config
	munged --force --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
		--pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
		--seed-file="$STATE/munge/munged.seed" || die "munged did not start; see $STATE/munge/munged.log"
	start_database
	SLURM_CONF=$CONF slurmdbd || die "slurmdbd did not start; see $STATE/slurmdbd.log"
	wait_for slurmdbd env SLURM_CONF="$CONF" sacctmgr -n list cluster
	SLURM_CONF=$CONF sacctmgr -i -Q add cluster local >/dev/null || true # present already after a restart
	slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/slurmctld.log"
	slurmd -f "$CONF" -N localhost || die "slurmd did not start; see $STATE/slurmd.log"
	wait_for "the node" answers
	echo "slurm-local: up in $((SECONDS - t0)) s: partition debug, $CPUS CPUs; source $STATE/env"
}

stop() { # pidfile...: TERM them all, wait up to 10 s, then KILL what is left
	local f pids=()
	for f in "$@"; do
		alive "$f" && pids+=("$(cat "$f")")
	done
	((${#pids[@]})) || return 0
	kill "${pids[@]}" 2>/dev/null || true
	local pid left
	for _ in $(seq 100); do
		left=()
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && left+=("$pid")
		done
		((${#left[@]})) || return 0
		sleep 0.1
	done
	kill -9 "${left[@]}" 2>/dev/null || true
}

down() {
	if alive "$STATE/slurmctld.pid"; then
		# end the jobs first, so that no training outlives its daemons
		SLURM_CONF=$CONF timeout 10 scancel --partition=debug 2>/dev/null || true
		for _ in $(seq 40); do
			[ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -t R,CG 2>/dev/null)" ] && break
			sleep 0.5
		done
	fi
	stop "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/slurmdbd.pid" "$STATE/db/mariadbd.pid"
	stop "$STATE/munge/munged.pid"
	echo "slurm-local: down"
}

status() {
	answers || {
		echo "slurm-local: not up ($STATE)"
		return 1
	}
	SLURM_CONF=$CONF sinfo
	SLURM_CONF=$CONF squeue
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
