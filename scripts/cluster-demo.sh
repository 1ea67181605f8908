#!/bin/sh
# cluster-demo.sh starts a three-node Impetus cluster on loopback for a newcomer: each node
# embeds a NATS server with JetStream, the three NATS servers form one cluster through their
# routes, and all nodes share one PostgreSQL database (scripts/postgres.sh provides it).
#
#   make cluster-demo          # then connect any XMPP client to 127.0.0.1:5222, :5223 or :5224
#
# Users alice, bob and carol exist with the password "demo" on domain localhost; PLAIN without
# TLS is allowed on loopback only. Ctrl-C stops the three nodes.
set -eu

BIN=${BIN:-bin/impetus}
DIR=${DIR:-./data/cluster-demo}
SCHEMA=impetus_cluster_demo

URL=$(./scripts/postgres.sh | sed -n 's/^IMPETUS_TEST_POSTGRES=//p')
if [ -z "$URL" ]; then
	echo "cluster-demo: scripts/postgres.sh gave no database URL" >&2
	exit 1
fi
if command -v runuser >/dev/null 2>&1; then
	runuser -u postgres -- psql -q -d impetus_test -c "CREATE SCHEMA IF NOT EXISTS $SCHEMA AUTHORIZATION impetus" >&2
else
	su postgres -s /bin/sh -c "psql -q -d impetus_test -c 'CREATE SCHEMA IF NOT EXISTS $SCHEMA AUTHORIZATION impetus'" >&2
fi
case "$URL" in
*\?*) DSN="$URL&search_path=$SCHEMA" ;;
*) DSN="$URL?search_path=$SCHEMA" ;;
esac

mkdir -p "$DIR"
printf 'alice:demo\nbob:demo\ncarol:demo\n' > "$DIR/passwd"
chmod 600 "$DIR/passwd"
PASSWD=$(cd "$DIR" && pwd)/passwd

pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
	routes=""
	for j in 1 2 3; do
		[ "$i" = "$j" ] || routes="$routes \"nats://127.0.0.1:$((6221 + j))\""
	done
	mkdir -p "$DIR/n$i/data"
	cat > "$DIR/n$i/impetus.conf" <<CONF
xmpp {
  debug_level = "INFO"
  storage = "pg"
  max_offline_messages = 0
}
Datasource "pg" { uri = ( "$DSN" ) }
domain "#xmpp#localhost" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = "file://$PASSWD" ]
  Listen "127.0.0.1:$((5221 + i))" { allow_plain_without_tls = true }
}
xmpp_cluster {
  node_name = "n$i"
  embedded_nats = true
  nats_listen = "127.0.0.1:$((4221 + i))"
  nats_cluster_listen = "127.0.0.1:$((6221 + i))"
  nats_routes = ($routes )
  replicas = 3
}
CONF
	"$BIN" serve --config "$DIR/n$i/impetus.conf" --data "$DIR/n$i/data" > "$DIR/n$i/impetus.log" 2>&1 &
	pids="$pids $!"
done

echo "cluster-demo: nodes n1 n2 n3 on 127.0.0.1:5222, :5223, :5224 (logs in $DIR/n*/impetus.log)"
echo "cluster-demo: users alice, bob, carol with password demo on localhost; Ctrl-C stops"
echo "cluster-demo: try 'kill -9' on one node's pid ($pids ) and watch its users come back elsewhere"
wait
