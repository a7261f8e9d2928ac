#!/usr/bin/env bash
# Starts PostgreSQL, MariaDB and Redis on their standard loopback ports when they are down, and
# makes sure they hold what the tests expect (idempotent; nothing runs on a fresh machine):
#   PostgreSQL 127.0.0.1:5432, superuser `postgres`, trust auth from loopback;
#   MariaDB    127.0.0.1:3306, `root` without password from loopback;
#   Redis      127.0.0.1:6379, keeps nothing on disk.
set -euo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do up "$1" && return 0; sleep 0.5; done
  echo "services: port $1 did not open" >&2
  return 1
}

# --- PostgreSQL (Debian's cluster of the installed major version) ---
PG_MARKER="# flipt-operator tests: trust from loopback"
pg_version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
[ -d "/etc/postgresql/$pg_version/main" ] || pg_createcluster "$pg_version" main >/dev/null
pg_hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
if ! grep -qF "$PG_MARKER" "$pg_hba"; then
  # first matching line wins: trust lines go on top
  { echo "$PG_MARKER"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$pg_hba"; } >"$pg_hba.new"
  chown postgres:postgres "$pg_hba.new"
  mv "$pg_hba.new" "$pg_hba"
  up 5432 && pg_ctlcluster "$pg_version" main reload
fi
if ! up 5432; then
  echo "services: starting PostgreSQL $pg_version"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  wait_port 5432
fi

# --- MariaDB ---
if ! up 3306; then
  echo "services: starting MariaDB"
  install -d -o mysql -g root /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  start-stop-daemon --start --oknodo --background --chuid mysql --exec /usr/sbin/mariadbd -- \
    --bind-address=127.0.0.1 --port=3306
  wait_port 3306
fi
# root over TCP from loopback without a password (Debian's root@localhost uses the unix socket)
if ! mariadb -h 127.0.0.1 -P 3306 -u root -e "SELECT 1" >/dev/null 2>&1; then
  mariadb -u root <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
FLUSH PRIVILEGES;
SQL
fi

# --- Redis ---
if ! up 6379; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
exit 0
