#!/usr/bin/env bash
# shellcheck disable=SC2094 # services write their own log files; the script only appends to them
# Local service stack without Docker: Kafka 4.x KRaft (assembled from Maven Central), Redis, PostgreSQL 15.
# Usage: deploy/stack.sh up|down|status|wait [kafka|redis|postgres ...]   (default: all three)
#        deploy/stack.sh up|down|status redis-cluster   (3 masters + 3 replicas on $REDIS_CLUSTER_PORT.. +5)
#        deploy/stack.sh up|down|status kafka-cluster   (3 KRaft brokers on $KAFKA_CLUSTER_PORT.. +2)
#        (the clusters are never started by default)
#        deploy/stack.sh tools   (promtool/prometheus and chromium for the observability and page tests)
# Everything lives in $LEADERBOARD_STACK_DIR (default <repo>/.stack); `down` keeps the data.
set -Eeuo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$DEPLOY")
STACK=${LEADERBOARD_STACK_DIR:-$REPO/.stack}
RUN=$STACK/run
LOGS=$STACK/logs
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-7000}                  # nodes on 7000..7005
REDIS_CLUSTER_NODE_TIMEOUT_MS=${REDIS_CLUSTER_NODE_TIMEOUT_MS:-2000} # a dead master's replica takes over after it
KAFKA_CLUSTER_PORT=${KAFKA_CLUSTER_PORT:-19092}                  # brokers on 19092..19094
KAFKA_CLUSTER_CONTROLLER_PORT=${KAFKA_CLUSTER_CONTROLLER_PORT:-19192} # controllers on 19192..19194
KAFKA_CLUSTER_ID_3=Zd3kB0LhRSuoSElxuGvQ6w # the 3-broker cluster's own id (fixed, like the single one's)
PG_BIN=/usr/lib/postgresql/15/bin
# Java 17: $JAVA, else Debian's openjdk-17 for this architecture, else $JAVA_HOME.
JAVA=${JAVA:-$(compgen -G "/usr/lib/jvm/java-17-openjdk-*/bin/java" | head -n1 || true)}
JAVA=${JAVA:-${JAVA_HOME:+$JAVA_HOME/bin/java}}
JAVA=${JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}  # not there yet: `up` installs it
KAFKA_CLUSTER_ID=C73KzToVXaacmSNsXLtzoQ # fixed: a re-created .stack gets the same id
KAFKA_JVM_OPTS=(-Xmx512m -Xms512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$DEPLOY/kafka/log4j2.properties")
TOPICS=("${LEADERBOARD_TOPIC:-match-won.v1}:12"
  "${LEADERBOARD_DLQ_TOPIC:-match-won.v1.dlq}:3"
  "${LEADERBOARD_PERIOD_CLOSED_TOPIC:-period-closed.v1}:3"
  "${LEADERBOARD_MODERATION_TOPIC:-moderation.v1}:3"
  "${LEADERBOARD_PERIOD_CORRECTED_TOPIC:-period-corrected.v1}:3")
# Topics keep raw records (player ids, display names) this long: the erasure horizon (docs/operations.md).
RETENTION_MS=$((${LEADERBOARD_ERASURE_HORIZON_S:-604800} * 1000))
declare -A READY_TIMEOUT=([kafka]=90 [redis]=30 [postgres]=60)

die() {
  trap - ERR
  echo "stack: $*" >&2
  exit 1
}
trap 'die "unexpected failure at deploy/stack.sh:$LINENO: $BASH_COMMAND"' ERR

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1fs", e - s }'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# kill -0 is not enough: an orphan may linger as a zombie when PID 1 does not reap.
pid_alive() { [[ -n ${1:-} ]] && [[ -r /proc/$1/status ]] && ! grep -q '^State:.*Z' "/proc/$1/status"; }
as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

port_of() { case $1 in kafka) echo "$KAFKA_PORT" ;; redis) echo "$REDIS_PORT" ;; postgres) echo "$PG_PORT" ;; esac; }
log_of() { echo "$LOGS/$1.log"; }

# Pid from the service's pid file, only if that process is alive and is really the service.
pid_of() {
  local f pattern pid
  case $1 in
    kafka) f=$RUN/kafka.pid pattern=kafka.Kafka ;;
    redis) f=$RUN/redis.pid pattern=redis-server ;;
    postgres) f=$STACK/pg/postmaster.pid pattern=postgres ;;
  esac
  pid=$(head -n1 "$f" 2>/dev/null || true)
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$pattern"; then echo "$pid"; fi
}

# Protocol-level readiness.
ready() {
  case $1 in
    kafka) kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 2 >/dev/null 2>&1 ;;
    redis) [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] ;;
    postgres) "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ;;
  esac
}

# ---------------------------------------------------------------- packages
ensure_deps() {
  local pkgs=() svc
  for svc; do
    case $svc in
      kafka)
        [[ -x $JAVA ]] || pkgs+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null || pkgs+=(maven)
        command -v kcat >/dev/null || pkgs+=(kcat) ;;
      redis)
        command -v redis-server >/dev/null || pkgs+=(redis-server)
        command -v redis-cli >/dev/null || pkgs+=(redis-tools) ;;
      postgres)
        [[ -x $PG_BIN/postgres ]] || pkgs+=(postgresql-15)
        [[ -x $PG_BIN/pg_isready ]] && command -v psql >/dev/null || pkgs+=(postgresql-client-15) ;;
    esac
  done
  apt_install "${pkgs[@]}"
}

# apt-get install with no service started by the packages (a temporary policy-rc.d).
apt_install() {
  local pkgs=("$@") sudo=
  ((${#pkgs[@]})) || return 0
  ((EUID == 0)) || sudo=sudo
  echo "stack: installing ${pkgs[*]} with apt-get (log: $LOGS/apt.log)" >&2
  # Keep the distro packages from starting their own redis/postgres/prometheus on our ports.
  local policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=1
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d
  fi
  {
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q &&
      if [[ " ${pkgs[*]} " == *" postgresql-15 "* ]]; then
        # No system "main" cluster: we run our own in .stack/pg.
        $sudo apt-get install -y -q postgresql-common &&
          $sudo sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
      fi &&
      $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  } >>"$LOGS/apt.log" 2>&1 || {
    [[ -z $policy ]] || $sudo rm -f /usr/sbin/policy-rc.d
    die "apt-get install ${pkgs[*]} failed; see $LOGS/apt.log"
  }
  [[ -z $policy ]] || $sudo rm -f /usr/sbin/policy-rc.d
}

# Test tools: promtool + the prometheus server (tests/test_observability.py), chromium (tests/test_page.py),
# and the load generators of the benchmark suite (wrk, hey).
cmd_tools() {
  local pkgs=() unit sudo=
  mkdir -p "$LOGS"
  command -v promtool >/dev/null && [[ -x /usr/bin/prometheus ]] || pkgs+=(prometheus)
  [[ -x /usr/bin/chromium ]] || pkgs+=(chromium)
  command -v wrk >/dev/null || pkgs+=(wrk)
  command -v hey >/dev/null || pkgs+=(hey)
  ((EUID == 0)) || sudo=sudo
  apt_install "${pkgs[@]}"
  if [[ " ${pkgs[*]} " == *" prometheus "* ]]; then
    # The tests start their own short-lived servers; the distro's daemons must stay off.
    for unit in prometheus prometheus-node-exporter; do
      if [[ -d /run/systemd/system ]]; then
        $sudo systemctl disable --now "$unit" >>"$LOGS/apt.log" 2>&1 || true
      elif [[ -x /etc/init.d/$unit ]]; then
        $sudo update-rc.d "$unit" disable >>"$LOGS/apt.log" 2>&1 || true
        $sudo "/etc/init.d/$unit" stop >>"$LOGS/apt.log" 2>&1 || true
      fi
    done
  fi
  printf 'tools     promtool=%s chromium=%s\n' "$(command -v promtool)" "$(command -v chromium)"
}

# ---------------------------------------------------------------- kafka
kafka_libs() {
  local libs=$STACK/kafka/libs hash
  hash=$(sha256sum "$DEPLOY/kafka/pom.xml" | cut -d' ' -f1)
  [[ $(cat "$libs/.stamp" 2>/dev/null) == "$hash" ]] && return 0
  rm -rf "$libs"
  mvn -B -q -Dstyle.color=never -f "$DEPLOY/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >"$LOGS/maven.log" 2>&1 ||
    die "maven could not assemble the kafka classpath; see $LOGS/maven.log"
  echo "$hash" >"$libs/.stamp"
}

start_kafka() {
  local java=$JAVA conf=$STACK/kafka/server.properties
  [[ -x $java ]] || java=java
  kafka_libs
  mkdir -p "$STACK/kafka/data"
  sed -e "s|@LOG_DIR@|$STACK/kafka/data|" -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" "$DEPLOY/kafka/server.properties" >"$conf"
  if [[ ! -f $STACK/kafka/data/meta.properties ]]; then # format exactly once
    "$java" -Xmx256m "-Dlog4j2.configurationFile=$DEPLOY/kafka/tools-log4j2.properties" -cp "$STACK/kafka/libs/*" \
      kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$conf" >>"$(log_of kafka)" 2>&1 ||
      die "formatting the kafka log dir failed; see $(log_of kafka)"
  fi
  # Not a process-group leader here, so setsid execs java directly and $! is the broker's pid.
  nohup setsid "$java" "${KAFKA_JVM_OPTS[@]}" -cp "$STACK/kafka/libs/*" kafka.Kafka "$conf" \
    >>"$(log_of kafka)" 2>&1 </dev/null &
  echo $! >"$RUN/kafka.pid"
}

# The broker's clock stamps match-won records (LogAppendTime): consumers date `future` events against the
# record's timestamp, so it must be one producers cannot forge, and replays then decide the same.
APPEND_TIME=message.timestamp.type=LogAppendTime

create_topics() {
  local meta t name parts main=${TOPICS[0]%:*}
  meta=$(kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 5 2>/dev/null) || die "kafka metadata request failed; see $(log_of kafka)"
  for t in "${TOPICS[@]}"; do
    name=${t%:*} parts=${t##*:}
    if grep -qF "topic \"$name\" with" <<<"$meta"; then
      [[ $name == "$main" ]] || continue
      # Made by an older stack with CreateTime: switch it (idempotent; applies to records appended from now).
      "$DEPLOY/kafka/bin/kafka-configs" --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type topics \
        --entity-name "$name" --add-config "$APPEND_TIME" >>"$LOGS/kafka-topics.log" 2>&1 ||
        die "setting $APPEND_TIME on topic $name failed; see $LOGS/kafka-topics.log"
      continue
    fi
    local extra=(--config "retention.ms=$RETENTION_MS")
    [[ $name == "$main" ]] && extra+=(--config "$APPEND_TIME")
    "$DEPLOY/kafka/bin/kafka-topics" --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 1 "${extra[@]}" >>"$LOGS/kafka-topics.log" 2>&1 ||
      die "creating topic $name failed; see $LOGS/kafka-topics.log"
  done
}

# ---------------------------------------------------------------- redis
start_redis() {
  mkdir -p "$STACK/redis"
  redis-server "$DEPLOY/redis/redis.conf" --port "$REDIS_PORT" --dir "$STACK/redis" \
    --pidfile "$RUN/redis.pid" --logfile "$(log_of redis)" >>"$(log_of redis)" 2>&1 ||
    die "redis-server failed to start; see $(log_of redis)"
}

# ---------------------------------------------------------------- postgres
start_postgres() {
  local pgdata=$STACK/pg sock=$RUN/pg log
  log=$(log_of postgres)
  mkdir -p "$pgdata" "$sock"
  touch "$log"
  if ((EUID == 0)); then
    chown postgres: "$pgdata" "$sock" "$log"
    # The postgres OS user must be able to reach the cluster dir (e.g. repo under /root).
    if ! runuser -u postgres -- test -x "$pgdata"; then
      local d=$pgdata
      while [[ $d != / ]]; do chmod o+x "$d"; d=$(dirname "$d"); done
    fi
  fi
  chmod 700 "$pgdata"
  if [[ ! -f $pgdata/PG_VERSION ]]; then
    as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >>"$log" 2>&1 || die "initdb failed; see $log"
    echo "include 'leaderboard.conf'" >>"$pgdata/postgresql.conf"
  fi
  cp "$DEPLOY/postgres/postgresql.conf" "$pgdata/leaderboard.conf"
  ((EUID != 0)) || chown postgres: "$pgdata/leaderboard.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$log" -o "-p $PG_PORT -k '$sock'" -W start >/dev/null 2>>"$log" ||
    die "pg_ctl start failed; see $log"
}

postgres_init() {
  local log
  log=$(log_of postgres)
  as_pg psql -h "$RUN/pg" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt \
    <"$DEPLOY/postgres/init.sql" >>"$log" 2>&1 || die "creating role/database leaderboard failed; see $log"
  psql "postgresql://leaderboard:leaderboard@127.0.0.1:$PG_PORT/leaderboard" -qAtc 'select 1' >/dev/null 2>>"$log" ||
    die "cannot connect as leaderboard@127.0.0.1:$PG_PORT; see $log"
}

# ---------------------------------------------------------------- redis cluster (3 masters + 3 replicas)
rc_ports() { local i; for ((i = 0; i < 6; i++)); do echo $((REDIS_CLUSTER_PORT + i)); done; }
rc_pid() { # port
  local pid
  pid=$(head -n1 "$RUN/redis-cluster-$1.pid" 2>/dev/null || true)
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server; then echo "$pid"; fi
}
rc_info() { redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r'; }

up_redis_cluster() {
  local p t0 deadline nodes=() pid
  t0=$(now)
  ensure_deps redis
  for p in $(rc_ports); do
    nodes+=("127.0.0.1:$p")
    [[ -z $(rc_pid "$p") ]] || continue
    port_open "$p" && die "port $p is taken by a process that is not this stack's redis-cluster"
    mkdir -p "$STACK/redis-cluster/$p"
    redis-server "$DEPLOY/redis/redis.conf" --port "$p" --dir "$STACK/redis-cluster/$p" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$REDIS_CLUSTER_NODE_TIMEOUT_MS" \
      --pidfile "$RUN/redis-cluster-$p.pid" --logfile "$LOGS/redis-cluster-$p.log" \
      >>"$LOGS/redis-cluster-$p.log" 2>&1 || die "redis-server on port $p failed to start; see $LOGS/redis-cluster-$p.log"
  done
  deadline=$((SECONDS + 30))
  for p in $(rc_ports); do
    until [[ $(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null) == PONG ]]; do
      ((SECONDS < deadline)) || die "redis-cluster node $p not answering after 30s; see $LOGS/redis-cluster-$p.log"
      sleep 0.1
    done
  done
  # Created once: nodes.conf in each node's dir remembers the cluster across down/up.
  if grep -q '^cluster_slots_assigned:0$' <<<"$(rc_info "$REDIS_CLUSTER_PORT")"; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >>"$LOGS/redis-cluster.log" 2>&1 || die "redis-cli --cluster create failed; see $LOGS/redis-cluster.log"
  fi
  deadline=$((SECONDS + 60))
  for p in $(rc_ports); do
    until grep -q '^cluster_state:ok$' <<<"$(rc_info "$p")"; do
      ((SECONDS < deadline)) || die "redis-cluster node $p: cluster_state not ok after 60s; see $LOGS/redis-cluster.log"
      sleep 0.2
    done
  done
  pid=$(rc_pid "$REDIS_CLUSTER_PORT")
  printf '%-13s up   pid=%-7s ports=%s-%s cluster_state:ok in %s\n' redis-cluster "$pid" \
    "$REDIS_CLUSTER_PORT" "$((REDIS_CLUSTER_PORT + 5))" "$(since "$t0")"
}

down_redis_cluster() {
  local p pid
  for p in $(rc_ports); do
    pid=$(rc_pid "$p")
    [[ -n $pid ]] || continue
    stop_pid "$pid" 30
    rm -f "$RUN/redis-cluster-$p.pid"
    printf '%-13s down (stopped pid %s, port %s)\n' redis-cluster "$pid" "$p"
  done
}

status_redis_cluster() {
  local p pid rc=0 role
  for p in $(rc_ports); do
    pid=$(rc_pid "$p")
    if [[ -n $pid ]] && port_open "$p"; then
      role=$(redis-cli -h 127.0.0.1 -p "$p" role 2>/dev/null | head -n1 || true)
      printf '%-13s up   pid=%-7s port=%-5s role=%-6s %s\n' redis-cluster "$pid" "$p" "$role" \
        "$(rc_info "$p" | grep '^cluster_state:' || true)"
    else
      printf '%-13s down port=%s\n' redis-cluster "$p"
      rc=1
    fi
  done
  return $rc
}

# ---------------------------------------------------------------- kafka cluster (3 KRaft brokers)
kc_ids() { echo 1 2 3; }
kc_port() { echo $((KAFKA_CLUSTER_PORT + $1 - 1)); }
kc_pid() { # node id
  local pid
  pid=$(head -n1 "$RUN/kafka-cluster-$1.pid" 2>/dev/null || true)
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q kafka.Kafka; then echo "$pid"; fi
}
kc_bootstrap() { local id out=(); for id in $(kc_ids); do out+=("127.0.0.1:$(kc_port "$id")"); done; (IFS=,; echo "${out[*]}"); }

up_kafka_cluster() {
  local java=$JAVA id dir conf voters=() log t0 deadline meta t name parts main=${TOPICS[0]%:*} extra
  t0=$(now)
  ensure_deps kafka
  [[ -x $java ]] || java=java
  kafka_libs
  for id in $(kc_ids); do voters+=("$id@127.0.0.1:$((KAFKA_CLUSTER_CONTROLLER_PORT + id - 1))"); done
  for id in $(kc_ids); do
    [[ -z $(kc_pid "$id") ]] || continue
    port_open "$(kc_port "$id")" && die "port $(kc_port "$id") is taken by a process that is not this stack's kafka-cluster"
    dir=$STACK/kafka-cluster/$id conf=$STACK/kafka-cluster/$id/server.properties log=$LOGS/kafka-cluster-$id.log
    mkdir -p "$dir/data"
    sed -e "s|@NODE_ID@|$id|" -e "s|@LOG_DIR@|$dir/data|" -e "s|@PORT@|$(kc_port "$id")|" \
      -e "s|@CONTROLLER_PORT@|$((KAFKA_CLUSTER_CONTROLLER_PORT + id - 1))|" \
      -e "s|@VOTERS@|$(IFS=,; echo "${voters[*]}")|" "$DEPLOY/kafka/cluster.properties" >"$conf"
    # Same format-once-then-start steps as start_kafka, per node: own cluster id, heap, log and pid file.
    if [[ ! -f $dir/data/meta.properties ]]; then # format exactly once
      "$java" -Xmx256m "-Dlog4j2.configurationFile=$DEPLOY/kafka/tools-log4j2.properties" -cp "$STACK/kafka/libs/*" \
        kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID_3" -c "$conf" >>"$log" 2>&1 ||
        die "formatting kafka-cluster node $id failed; see $log"
    fi
    nohup setsid "$java" "${KAFKA_JVM_OPTS[@]/-Xm[xs]512m/-Xmx384m}" -cp "$STACK/kafka/libs/*" kafka.Kafka "$conf" \
      >>"$log" 2>&1 </dev/null &
    echo $! >"$RUN/kafka-cluster-$id.pid"
  done
  deadline=$((SECONDS + READY_TIMEOUT[kafka]))
  until [[ $(kcat -L -b "$(kc_bootstrap)" -m 2 2>/dev/null | grep -c '^  broker ') -ge 3 ]]; do
    for id in $(kc_ids); do
      [[ -n $(kc_pid "$id") ]] || die "kafka-cluster node $id exited during startup; see $LOGS/kafka-cluster-$id.log"
    done
    ((SECONDS < deadline)) || die "kafka-cluster: 3 brokers not up after ${READY_TIMEOUT[kafka]}s; see $LOGS/kafka-cluster-*.log"
    sleep 0.5
  done
  meta=$(kcat -L -b "$(kc_bootstrap)" -m 5 2>/dev/null) || die "kafka-cluster metadata request failed"
  for t in "${TOPICS[@]}"; do
    name=${t%:*} parts=${t##*:}
    grep -qF "topic \"$name\" with" <<<"$meta" && continue
    extra=(--config min.insync.replicas=2)
    [[ $name == "$main" ]] && extra+=(--config "$APPEND_TIME")
    "$DEPLOY/kafka/bin/kafka-topics" --bootstrap-server "$(kc_bootstrap)" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 3 "${extra[@]}" >>"$LOGS/kafka-topics.log" 2>&1 ||
      die "creating topic $name on kafka-cluster failed; see $LOGS/kafka-topics.log"
  done
  printf '%-13s up   bootstrap=%s (3 brokers, RF 3, min.insync.replicas 2) in %s\n' kafka-cluster \
    "$(kc_bootstrap)" "$(since "$t0")"
}

down_kafka_cluster() { # all at once: the last broker stopped alone would wait for a controller quorum
  local id pid stops=()
  # 10 s, not 30: with a node already dead (a kill test, a crash) the others lose the quorum as they stop
  # and wait for it until killed. Idle, a clean stop takes ~6 s; a broker's log recovers from a kill.
  for id in $(kc_ids); do
    pid=$(kc_pid "$id")
    [[ -n $pid ]] || continue
    stop_pid "$pid" 10 &
    stops+=($!)
    printf '%-13s down (stopping node %s, pid %s)\n' kafka-cluster "$id" "$pid"
  done
  ((${#stops[@]} == 0)) || wait "${stops[@]}"
  for id in $(kc_ids); do rm -f "$RUN/kafka-cluster-$id.pid"; done
}

status_kafka_cluster() {
  local id pid rc=0
  for id in $(kc_ids); do
    pid=$(kc_pid "$id")
    if [[ -n $pid ]] && port_open "$(kc_port "$id")"; then
      printf '%-13s up   node=%s pid=%-7s port=%s\n' kafka-cluster "$id" "$pid" "$(kc_port "$id")"
    else
      printf '%-13s down node=%s port=%s\n' kafka-cluster "$id" "$(kc_port "$id")"
      rc=1
    fi
  done
  return $rc
}

# ---------------------------------------------------------------- lifecycle
wait_ready() { # svc [pid-to-watch]
  local svc=$1 pid=${2:-} limit deadline
  limit=${READY_TIMEOUT[$svc]}
  deadline=$((SECONDS + limit))
  until ready "$svc"; do
    if [[ -n $pid ]] && ! pid_alive "$pid" && [[ -z $(pid_of "$svc") ]]; then
      die "$svc exited during startup; see $(log_of "$svc")"
    fi
    ((SECONDS < deadline)) || die "$svc not ready on 127.0.0.1:$(port_of "$svc") after ${limit}s; see $(log_of "$svc")"
    sleep 0.2
  done
}

cmd_up() {
  local svc pid port
  local -A t0 state
  mkdir -p "$RUN" "$LOGS"
  ensure_deps "$@"
  for svc; do # launch everything first so the slow JVM boot overlaps with the rest
    pid=$(pid_of "$svc") port=$(port_of "$svc")
    t0[$svc]=$(now)
    if [[ -n $pid ]]; then
      state[$svc]="already running"
    elif port_open "$port"; then
      die "port $port is taken by a process that is not this stack's $svc"
    else
      [[ $svc == postgres ]] || rm -f "$RUN/$svc.pid"
      "start_$svc"
      state[$svc]=started
    fi
  done
  for svc in redis postgres kafka; do # fastest first, so each reported time is its own
    [[ -n ${t0[$svc]:-} ]] || continue
    wait_ready "$svc" "$(pid_of "$svc")"
    case $svc in
      kafka) create_topics ;;
      postgres) postgres_init ;;
    esac
    printf '%-9s up   pid=%-7s port=%-5s %s in %s\n' "$svc" "$(pid_of "$svc")" "$(port_of "$svc")" \
      "${state[$svc]}" "$(since "${t0[$svc]}")"
  done
}

stop_pid() { # pid seconds: TERM, wait, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  echo "stack: pid $pid ignored SIGTERM for $2s; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
  local svc pid
  for svc; do
    pid=$(pid_of "$svc")
    if [[ -z $pid ]]; then
      printf '%-9s down (was not running)\n' "$svc"
      continue
    fi
    case $svc in
      postgres) as_pg "$PG_BIN/pg_ctl" -D "$STACK/pg" -m fast -w -t 30 stop >/dev/null 2>>"$(log_of postgres)" ||
        stop_pid "$pid" 10 ;;
      kafka) stop_pid "$pid" 30 ;;
      redis) stop_pid "$pid" 30 ;;
    esac
    [[ $svc == postgres ]] || rm -f "$RUN/$svc.pid"
    printf '%-9s down (stopped pid %s)\n' "$svc" "$pid"
  done
}

cmd_status() {
  local svc pid rc=0 rss
  for svc; do
    pid=$(pid_of "$svc")
    if [[ -n $pid ]] && port_open "$(port_of "$svc")"; then
      rss=$(awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status")
      printf '%-9s up   pid=%-7s port=%-5s rss=%sMB\n' "$svc" "$pid" "$(port_of "$svc")" "$rss"
    else
      printf '%-9s down pid=%-7s port=%-5s\n' "$svc" "${pid:--}" "$(port_of "$svc")"
      rc=1
    fi
  done
  return $rc
}

cmd_wait() {
  local svc
  for svc; do wait_ready "$svc"; done
  [[ " $* " != *" postgres "* ]] || postgres_init
  cmd_status "$@"
}

main() {
  local cmd=${1:-} svc
  shift || true
  if [[ $cmd == tools ]]; then
    cmd_tools
    return
  fi
  (($#)) || set -- kafka redis postgres
  if [[ $* =~ (^| )(redis|kafka)-cluster( |$) ]]; then # the clusters: on their own, never by default
    (($# == 1)) || die "start or stop a cluster on its own: deploy/stack.sh $cmd $1"
    [[ $cmd =~ ^(up|down|status)$ ]] || die "usage: deploy/stack.sh up|down|status redis-cluster|kafka-cluster"
    mkdir -p "$RUN" "$LOGS"
    "${cmd}_${1//-/_}" || exit 1 # only status returns non-zero (a node down)
    return
  fi
  for svc; do
    [[ $svc =~ ^(kafka|redis|postgres)$ ]] ||
      die "unknown service '$svc' (kafka|redis|postgres|redis-cluster|kafka-cluster)"
  done
  case $cmd in
    up | down | wait) "cmd_$cmd" "$@" ;;
    status) cmd_status "$@" || exit 1 ;;
    *) die "usage: deploy/stack.sh up|down|status|wait [kafka|redis|postgres ...] | tools" ;;
  esac
}

main "$@"
