#!/bin/sh
# postgres.sh makes a local PostgreSQL available for the storage tests and
# prints the IMPETUS_TEST_POSTGRES line to export. It is idempotent: run it
# as root on Debian as often as you like, on a fresh machine or one that
# already has the server, cluster, role and database. Progress goes to
# stderr; stdout carries only the variable, so this works:
#
#   export "$(scripts/postgres.sh)"
#   go test ./internal/storage/...
set -eu

HOST=127.0.0.1
PORT=5432
ROLE=impetus
PASSWORD=impetus
DB=impetus_test
URL="postgres://$ROLE:$PASSWORD@$HOST:$PORT/$DB?sslmode=disable"

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "must run as root"
	exit 1
fi

ready() { pg_isready -q -h "$HOST" -p "$PORT" >/dev/null 2>&1; }

install_server() {
	export DEBIAN_FRONTEND=noninteractive
	# Only refresh the package lists when the install fails for lack of
	# them; a refresh is slow and needs the network.
	if ! apt-get install -y postgresql >&2; then
		log "install failed, refreshing package lists"
		apt-get update >&2
		apt-get install -y postgresql >&2
	fi
}

# as_postgres runs a command as the postgres superuser over the local socket
# (peer authentication), which works before any password exists.
as_postgres() {
	if command -v runuser >/dev/null 2>&1; then
		runuser -u postgres -- "$@"
	else
		su postgres -s /bin/sh -c '"$0" "$@"' -- "$@"
	fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
	log "installing postgresql"
	install_server
fi

if ! ready; then
	# Pick the newest installed server version.
	VERSION=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
	if [ -z "$VERSION" ]; then
		log "no PostgreSQL server version found under /usr/lib/postgresql"
		exit 1
	fi
	if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$VERSION main"; then
		log "creating cluster $VERSION/main"
		pg_createcluster "$VERSION" main >&2
	fi
	log "starting cluster $VERSION/main"
	# Containers often lack a running init system; pg_ctlcluster works
	# either way. "already running" on a different port is not fatal.
	pg_ctlcluster "$VERSION" main start >&2 || service postgresql start >&2 || true
	i=0
	until ready; do
		i=$((i + 1))
		if [ "$i" -ge 30 ]; then
			log "PostgreSQL does not answer on $HOST:$PORT"
			pg_lsclusters >&2 || true
			exit 1
		fi
		sleep 1
	done
fi

# Role and database, created only when absent. The password is reset every
# time so that a role left over with another password still works.
as_postgres psql -q -v ON_ERROR_STOP=1 -d postgres <<SQL >&2
DO \$\$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
		CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
	ELSE
		ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
	END IF;
END
\$\$;
SQL
if [ "$(as_postgres psql -tAq -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
	log "creating database $DB"
	as_postgres createdb -O "$ROLE" "$DB"
fi

# Prove that the URL works (password authentication over TCP) before
# printing it.
if ! PGPASSWORD=$PASSWORD psql -tAq -h "$HOST" -p "$PORT" -U "$ROLE" -d "$DB" -c 'SELECT 1' >/dev/null; then
	log "cannot log in as $ROLE over TCP; check pg_hba.conf"
	exit 1
fi

echo "IMPETUS_TEST_POSTGRES=$URL"
