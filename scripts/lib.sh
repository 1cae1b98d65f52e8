# Shared by scripts/dev and scripts/test: find or start Postgres and Redis.
#
# Reuses servers already reachable at DATABASE_URL / REDIS_URL. Otherwise, for a local address,
# starts private ones from the installed binaries with their data under .local/ (git-ignored);
# when the binaries are missing it installs them with apt-get if we are root, or prints the one
# command that would.

STARTED_POSTGRES=0
STARTED_REDIS=0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="$ROOT/.local"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/levelup}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"

say() { printf '\033[1m[levelup]\033[0m %s\n' "$*" >&2; }
die() { printf '[levelup] error: %s\n' "$*" >&2; exit 1; }

# host and port of a URL like scheme://[user[:pw]@]host[:port][/...]
url_host() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest%%:*}"; }
url_port() {
  local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"
  if [[ "$rest" == *:* ]]; then echo "${rest##*:}"; else echo "$2"; fi
}
is_local_host() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" ]]; }

install_packages() {
  # $1 = what for, rest = Debian packages
  local what="$1"; shift
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    say "installing $what: apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
      || die "apt-get install $* failed"
  else
    die "$what is not installed and not reachable; install it with: sudo apt-get install -y $*"
  fi
}

# Where `cargo build` (dev profile) puts the binaries: honours CARGO_TARGET_DIR, build.target-dir
# in .cargo/config.toml and the like, by asking cargo itself.
cargo_bin_dir() {
  local target
  target="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')" || true
  [[ -n "$target" ]] || die "could not ask cargo for its target directory (cargo metadata)"
  echo "$target/debug"
}

wait_until() {
  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "timed out waiting for $what"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- Postgres
pg_reachable() {
  local host port; host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$host" -p "$port" -t 2
  else
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

pg_bin_dir() {
  local candidate
  candidate="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$candidate" && -x "$candidate/postgres" ]]; then echo "$candidate"; return; fi
  if command -v postgres >/dev/null && command -v initdb >/dev/null; then dirname "$(command -v postgres)"; return; fi
  return 1
}

ensure_postgres() {
  if pg_reachable; then say "Postgres reachable at $(url_host "$DATABASE_URL"):$(url_port "$DATABASE_URL" 5432)"; return; fi
  local host port; host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
  is_local_host "$host" || die "Postgres at $host:$port is not reachable (DATABASE_URL)"
  local bin; bin="$(pg_bin_dir)" || { install_packages "PostgreSQL" postgresql; bin="$(pg_bin_dir)" || die "PostgreSQL binaries not found after install"; }
  local data="$LOCAL_DIR/postgres"
  local as=()
  if [[ "$(id -u)" == "0" ]]; then
    # initdb and postgres refuse to run as root.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$LOCAL_DIR" postgres
    as=(runuser -u postgres --)
  fi
  mkdir -p "$data"
  [[ "$(id -u)" == "0" ]] && chown -R postgres "$data"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    say "initialising a private Postgres cluster in $data"
    "${as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 >/dev/null || die "initdb failed"
  fi
  say "starting Postgres on $host:$port (data in $data)"
  "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null \
    || die "Postgres did not start; see $data/server.log"
  wait_until 30 "Postgres" pg_reachable
  STARTED_POSTGRES=1
}

stop_private_postgres() {
  local data="$LOCAL_DIR/postgres" bin
  [[ "${STARTED_POSTGRES:-0}" == 1 ]] || return 0
  [[ -f "$data/postmaster.pid" ]] || return 0
  bin="$(pg_bin_dir)" || return 0
  if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1
  else "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1; fi
}

# ---------------------------------------------------------------- Redis
redis_reachable() {
  local host port; host="$(url_host "$REDIS_URL")"; port="$(url_port "$REDIS_URL" 6379)"
  if command -v redis-cli >/dev/null; then
    [[ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" == "PONG" ]]
  else
    (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && read -r -t 2 reply <&3 && [[ "$reply" == +PONG* ]]) 2>/dev/null
  fi
}

ensure_redis() {
  if redis_reachable; then say "Redis reachable at $(url_host "$REDIS_URL"):$(url_port "$REDIS_URL" 6379)"; return; fi
  local host port; host="$(url_host "$REDIS_URL")"; port="$(url_port "$REDIS_URL" 6379)"
  is_local_host "$host" || die "Redis at $host:$port is not reachable (REDIS_URL)"
  command -v redis-server >/dev/null || install_packages "Redis" redis-server
  local data="$LOCAL_DIR/redis"
  mkdir -p "$data"
  say "starting Redis on $host:$port with AOF persistence (data in $data)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$data" \
    --pidfile "$data/redis.pid" --logfile "$data/redis.log" --appendonly yes --save "" \
    || die "Redis did not start; see $data/redis.log"
  wait_until 30 "Redis" redis_reachable
  STARTED_REDIS=1
}

stop_private_redis() {
  [[ "${STARTED_REDIS:-0}" == 1 ]] || return 0
  local pidfile="$LOCAL_DIR/redis/redis.pid"
  [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null
  rm -f "$pidfile"
}

# Stops whatever ensure_postgres / ensure_redis started in this shell (and nothing else).
stop_started_services() {
  stop_private_postgres || true
  stop_private_redis || true
}
