#!/usr/bin/env bash
# Load generators side by side against one nginx worker on loopback:
# tracebench load, wrk, oha and ab, over http and https (nginx with a
# certificate openssl makes here; every generator told not to check it),
# with keep-alive on and off, -c 10, medians of RUNS runs. Prints req/s and
# the generator's own CPU time per request as Markdown for
# docs/benchmarks.md.
#
#   bash bench/loadgen.sh                    # ~6 minutes on 2 cores
#   DURATION=3 RUNS=1 bash bench/loadgen.sh  # a quick look
#
# Installs wrk, nginx and ab (apache2-utils) with apt-get and oha with
# `cargo install oha --locked` when they are missing (oha's build takes a
# few minutes once). Load goes to 127.0.0.1 only, DURATION seconds a run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
PORT=${PORT:-18280}
CONNECTIONS=10

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v ab >/dev/null 2>&1 || need+=(apache2-utils)
if ((${#need[@]})); then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null 2>&1 || cargo install oha --locked >&2
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet
BIN=$PWD/target/release/tracebench
work=$(mktemp -d)
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/logs/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_body_temp_path $work/body;
  server {
    listen 127.0.0.1:$PORT backlog=1024;
    listen 127.0.0.1:$((PORT + 1)) ssl backlog=1024;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / { default_type text/html; return 200 '<h1>Hello, World!</h1>'; }
  }
}
CONF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=127.0.0.1 2>/dev/null
"$NGINX" -p "$work" -c "$work/nginx.conf"
HTTP_URL="http://127.0.0.1:$PORT/"
HTTPS_URL="https://127.0.0.1:$((PORT + 1))/"
for _ in $(seq 100); do curl -s -o /dev/null "$HTTP_URL" && break; sleep 0.05; done

# run_tool NAME KEEPALIVE: prints "req_per_s cpu_us_per_req". The tool runs
# in a child shell whose children's CPU times (cutime + cstime, from
# /proc) are read once it has exited.
# $URL and $INSECURE (the generators' flag to take any certificate) are
# the scheme's.
run_tool() {
  local name=$1 keepalive=$2 cmd
  local ours="$BIN load $URL ${INSECURE:+-k} -c $CONNECTIONS -z ${DURATION}s"
  local oha="oha --no-tui ${INSECURE:+--insecure} -c $CONNECTIONS -z ${DURATION}s"
  case "$name/$keepalive" in
    tracebench/on) cmd="$ours --keep-alive" ;;
    tracebench/off) cmd="$ours" ;;
    wrk/on) cmd="wrk -t2 -c$CONNECTIONS -d${DURATION}s $URL" ;;
    wrk/off) cmd="wrk -t2 -c$CONNECTIONS -d${DURATION}s -H 'Connection: close' $URL" ;;
    oha/on) cmd="$oha $URL" ;;
    oha/off) cmd="$oha --disable-keepalive $URL" ;;
    ab/on) cmd="ab -q -k -c $CONNECTIONS -t $DURATION -n 100000000 $URL" ;;
    ab/off) cmd="ab -q -c $CONNECTIONS -t $DURATION -n 100000000 $URL" ;;
  esac
  bash -c "$cmd > $work/out.txt 2>&1; cat /proc/\$\$/stat > $work/stat.txt"
  local rps ticks
  rps=$(grep -E 'Requests/sec|Requests per second' "$work/out.txt" | head -1 | grep -oE '[0-9]+(\.[0-9]+)?' | head -1)
  ticks=$(awk '{ print $16 + $17 }' "$work/stat.txt")
  awk -v r="$rps" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
    'BEGIN { printf "%.0f %.2f\n", r, (t / hz) * 1e6 / (r * d) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "## Load generators, $(date -u +%Y-%m-%d), $(nproc) cores, -c $CONNECTIONS, ${DURATION} s, nginx 1 worker"
echo
echo "$("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}'); $(oha --version); $(ab -V | head -1)."
tools=(tracebench wrk oha ab)
for scheme in http https; do
if [ "$scheme" = https ]; then URL=$HTTPS_URL INSECURE=1; else URL=$HTTP_URL INSECURE=; fi
for keepalive in on off; do
  declare -A rps=() cpu=()
  for run in $(seq "$RUNS"); do
    for tool in "${tools[@]}"; do
      read -r r c < <(run_tool "$tool" "$keepalive")
      rps[$tool]+="$r "
      cpu[$tool]+="$c "
      echo "  $scheme keep-alive $keepalive run $run $tool: $r req/s, $c us CPU/req" >&2
    done
  done
  echo
  echo "### $scheme, keep-alive $keepalive"
  echo
  echo "| generator | req/s (median of $RUNS) | runs | vs wrk | vs oha | generator CPU µs/req |"
  echo "|---|---:|---|---:|---:|---:|"
  wrk_m=$(tr ' ' '\n' <<<"${rps[wrk]}" | grep . | median)
  oha_m=$(tr ' ' '\n' <<<"${rps[oha]}" | grep . | median)
  for tool in "${tools[@]}"; do
    m=$(tr ' ' '\n' <<<"${rps[$tool]}" | grep . | median)
    c=$(tr ' ' '\n' <<<"${cpu[$tool]}" | grep . | median)
    awk -v n="$tool" -v m="$m" -v all="${rps[$tool]}" -v w="$wrk_m" -v o="$oha_m" -v c="$c" \
      'BEGIN { printf "| %s | %d | %s | %.2f× | %.2f× | %s |\n", n, m, all, m / w, m / o, c }'
  done
  unset rps cpu
done
done
