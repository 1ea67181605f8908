#!/usr/bin/env bash
# Side-by-side load test of Impetus, ejabberd and Prosody (`make bench-peers`).
#
# Installs Debian's ejabberd and prosody (scripts/peers.sh), runs each server as its own process
# with its configuration and data in a temporary directory on its own loopback address, with
# rate limits and traffic shapers off, the same certificate (ECDSA P-256) and SCRAM-SHA-1 keys
# stored at 4096 iterations. Then cmd/impetus-load runs the same scenarios against each, one
# server at a time, and scripts/bench-table.py writes the table into docs/performance.md.
#
# Everything stays on 127.0.0.0/8. Knobs (environment): IDLE_SESSIONS (10000), CHAT_SECONDS (10),
# LOGINS (2000), SERVERS ("impetus ejabberd prosody"), OUT (docs/performance.md), KEEP=1 keeps
# the temporary directory.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
CHAT_SECONDS=${CHAT_SECONDS:-10}
LOGINS=${LOGINS:-2000}
SERVERS=${SERVERS:-"impetus ejabberd prosody"}
OUT=${OUT:-docs/performance.md}
PASSWORD=loadpass
USERS=$((IDLE_SESSIONS + 1000))
PRESENCE_FIRST=$((IDLE_SESSIONS + 200)) # presence users get fresh rosters
PRESENCE_USERS=200
PRESENCE_CONTACTS=20

# Each server listens on its own loopback address, so no port can clash with other local
# servers and the packaged services' ports on 0.0.0.0 are not needed.
declare -A ADDR=([impetus]=127.0.60.1 [ejabberd]=127.0.60.2 [prosody]=127.0.60.3 [impetus2]=127.0.60.4)

if [ "$(ulimit -n)" -lt $((IDLE_SESSIONS + 200)) ]; then
  ulimit -n "$(ulimit -Hn)" || true
fi
if [ "$(ulimit -n)" -lt $((IDLE_SESSIONS + 200)) ]; then
  echo "bench-peers: open-file limit $(ulimit -n) is below IDLE_SESSIONS+200; lower IDLE_SESSIONS" >&2
  exit 1
fi

./scripts/peers.sh

WORK=$(mktemp -d /tmp/impetus-bench-XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${EJ_CTL:-}" ]; then timeout 20 ejabberdctl $EJ_CTL stop >/dev/null 2>&1 || true; fi
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-peers: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "bench-peers: building into $WORK"
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/impetus" ./cmd/impetus
go build -o "$WORK/bin/impetus-load" ./cmd/impetus-load
LOAD=$WORK/bin/impetus-load

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/both.pem"
chmod 644 "$WORK"/*.pem

wait_port() { # addr port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "bench-peers: nothing listens on $1:$2" >&2; return 1; fi
    sleep 0.2
  done
}

# The peers run as their own users through runuser, whose login session resets the soft
# open-file limit to 1024: too few for 500 chat pairs, let alone the idle run. Each raises it
# to the hard limit before starting.
NOFILE=$(ulimit -Hn)

# --- Impetus ----------------------------------------------------------------------------------
start_impetus() { # name domain [extra config]
  local name=$1 domain=$2 dir=$WORK/$1
  mkdir -p "$dir/data"
  if [ ! -f "$WORK/passwd" ]; then
    # Stored SCRAM-SHA-1 keys at 4096 iterations, as the peers store them (impetus passwd
    # --scram writes the same form with a salt per user; here one salt serves all users so
    # that the keys are computed once).
    python3 - "$WORK/passwd" "$USERS" "$PASSWORD" <<'PY'
import base64, hashlib, hmac, sys
path, n, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
salt = b"impetus-bench-salt"
salted = hashlib.pbkdf2_hmac("sha1", pw, salt, 4096)
stored = hashlib.sha1(hmac.new(salted, b"Client Key", hashlib.sha1).digest()).digest()
server = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
b64 = lambda b: base64.b64encode(b).decode()
keys = "{SCRAM-SHA-1}4096$%s$%s$%s" % (b64(salt), b64(stored), b64(server))
with open(path, "w") as f:
    for i in range(n):
        f.write("user%d:%s\n" % (i, keys))
PY
  fi
  cat > "$dir/impetus.conf" <<EOF
xmpp {
  debug_level = "ERROR"
  control_socket = "none"
  max_roster_items = 0
  # The peers run without a message archive; archiving is measured by its own run (MAM=1).
  mam_default = "${MAM_DEFAULT:-never}"
}
domain "#xmpp#$domain" {
  XMPP_Role = "server"
  XMPP_Dialback_Secret = "bench-secret"
}
${3:-}
xmpp_listener {
  AuthPlainParameters = [ uri = "file://$WORK/passwd" ]
  tls_certificate = "$WORK/both.pem"
  allow_plain_without_tls = true
  disable_nagle_algorithm = true
  read_rate = 0
  max_connections = 0
  max_connections_per_ip = 0
  max_resources_per_account = 0
  Listen "${ADDR[$name]}:5222" {}
  Listen "${ADDR[$name]}:5269" {}
}
EOF
  "$WORK/bin/impetus" serve --config "$dir/impetus.conf" --data "$dir/data" > "$dir/log" 2>&1 &
  PIDS+=($!)
  SERVER_PID=$!
  wait_port "${ADDR[$name]}" 5222 20
}

# --- ejabberd ---------------------------------------------------------------------------------
start_ejabberd() {
  local dir=$WORK/ejabberd
  mkdir -p "$dir/spool" "$dir/logs"
  cp "$WORK/both.pem" "$dir/ejabberd.pem"
  cat > "$dir/ejabberd.yml" <<EOF
hosts: [localhost]
loglevel: warning
certfiles: ["$dir/ejabberd.pem"]
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
listen:
  - port: 5222
    ip: "${ADDR[ejabberd]}"
    module: ejabberd_c2s
    starttls: true
    max_stanza_size: 262144
    shaper: none
    access: c2s
    backlog: 1024
shaper: {}
shaper_rules: {}
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
max_fsm_queue: 100000
modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
  mod_offline: {}
  mod_version: {}
EOF
  # Erlang's defaults allow fewer ports than the idle scenario opens.
  printf 'ERL_MAX_PORTS=%d\nERL_PROCESSES=1000000\n' $((IDLE_SESSIONS * 2 + 1000)) > "$dir/ejabberdctl.cfg"
  chown -R ejabberd "$dir"
  EJ_NODE="impetusbench$$@localhost"
  EJ_CTL="--config-dir $dir --spool $dir/spool --logs $dir/logs --node $EJ_NODE"
  # shellcheck disable=SC2086
  runuser -u ejabberd -- sh -c 'ulimit -n "$0"; exec ejabberdctl "$@" foreground' "$NOFILE" $EJ_CTL > "$dir/console.log" 2>&1 &
  PIDS+=($!)
  wait_port "${ADDR[ejabberd]}" 5222 60
  SERVER_PID=$(pgrep -f "beam.smp.*$EJ_NODE" | head -1)
  # XEP-0227 import, stored as SCRAM keys (4096 iterations), in files of 1000 accounts: one
  # ejabberdctl call gives up after 60 seconds, which a busy machine needs for ~10,000.
  local from
  for ((from = 0; from < USERS; from += 1000)); do
    {
      echo "<?xml version='1.0' encoding='UTF-8'?><server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>"
      awk -v a="$from" -v n="$((from + 1000 < USERS ? from + 1000 : USERS))" -v p="$PASSWORD" \
        'BEGIN { for (i = a; i < n; i++) printf "<user name=\"user%d\" password=\"%s\"/>\n", i, p }'
      echo "</host></server-data>"
    } > "$dir/users-$from.xml"
    chown ejabberd "$dir/users-$from.xml"
    # shellcheck disable=SC2086
    timeout 120 ejabberdctl $EJ_CTL import_piefxis "$dir/users-$from.xml" >/dev/null
  done
}

stop_ejabberd() {
  # shellcheck disable=SC2086
  timeout 30 ejabberdctl $EJ_CTL stop >/dev/null 2>&1 || true
  EJ_CTL=
}

# --- Prosody ----------------------------------------------------------------------------------
start_prosody() {
  local dir=$WORK/prosody
  mkdir -p "$dir/data/localhost/accounts"
  cp "$WORK/cert.pem" "$WORK/key.pem" "$dir/"
  cat > "$dir/prosody.cfg.lua" <<EOF
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
interfaces = { "${ADDR[prosody]}" }
local_interfaces = { "${ADDR[prosody]}" }
c2s_ports = { 5222 }
s2s_ports = { }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "offline"; "version"; "posix" }
modules_disabled = { "limits" }
authentication = "internal_hashed"
storage = "internal"
log = { warn = "$dir/prosody.log" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
network_settings = { tcp_backlog = 1024 }
VirtualHost "localhost"
	ssl = { certificate = "$dir/cert.pem"; key = "$dir/key.pem" }
EOF
  # Accounts are written as Prosody's internal storage files, SCRAM keys at 4096 iterations
  # (Prosody itself would use 10000). All users share one salt: the keys are computed once.
  python3 - "$dir/data/localhost/accounts" "$USERS" "$PASSWORD" <<'PY'
import hashlib, hmac, sys
path, n, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
salt = "impetus-bench-salt"
salted = hashlib.pbkdf2_hmac("sha1", pw, salt.encode(), 4096)
ck = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
sk = hmac.new(salted, b"Server Key", hashlib.sha1).hexdigest()
stored = hashlib.sha1(ck).hexdigest()
body = ('return {\n\t["iteration_count"] = 4096;\n\t["salt"] = "%s";\n'
        '\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};\n') % (salt, sk, stored)
for i in range(n):
    with open("%s/user%d.dat" % (path, i), "w") as f:
        f.write(body)
PY
  chown -R prosody "$dir"
  runuser -u prosody -- sh -c 'ulimit -n "$0"; exec prosody --config "$1" -F' "$NOFILE" "$dir/prosody.cfg.lua" > "$dir/console.log" 2>&1 &
  PIDS+=($!)
  wait_port "${ADDR[prosody]}" 5222 30
  SERVER_PID=$(pgrep -u prosody -f "prosody --config $dir/prosody.cfg.lua" | tail -1)
}

# --- scenarios --------------------------------------------------------------------------------
run() { # label scenario flags...
  local label=$1 scenario=$2
  shift 2
  echo "bench-peers: $label $scenario $*" >&2
  if ! "$LOAD" "$scenario" -label "$label" -pid "$SERVER_PID" -password "$PASSWORD" "$@" >> "$RESULTS" 2> "$WORK/last.err"; then
    echo "bench-peers: $label $scenario failed: $(tail -3 "$WORK/last.err")" >&2
    echo "{\"scenario\":\"$scenario\",\"label\":\"$label\",\"failed\":true}" >> "$RESULTS"
  fi
}

scenarios() { # server
  local s=$1 a="-addr ${ADDR[$1]}:5222"
  sleep 2
  run "$s" login $a -n "$LOGINS" -users 1000 -c 32
  run "$s" login $a -n "$LOGINS" -users 1000 -c 32 -tls=false -mech PLAIN
  run "$s/50" chat $a -login-timeout 10s -pairs 50 -window 16 -duration "${CHAT_SECONDS}s"
  run "$s/500" chat $a -login-timeout 10s -pairs 500 -window 16 -duration "${CHAT_SECONDS}s"
  if [ "$s" = impetus ]; then
    # Half of Impetus's peak chat rate, offered to every server in the latency comparison.
    HALF=$(python3 -c 'import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
peak = max([r.get("rate", 0) for r in rs if r.get("scenario") == "chat" and r.get("label") in ("impetus/50", "impetus/500")] or [4000])
print(int(peak / 2))' "$RESULTS")
  fi
  run "$s/half" chat $a -login-timeout 10s -pairs 500 -window 16 -duration "${CHAT_SECONDS}s" -rate "$HALF"
  run "$s" presence $a -first "$PRESENCE_FIRST" -users "$PRESENCE_USERS" -contacts "$PRESENCE_CONTACTS" -changes 5
  run "$s" idle $a -n "$IDLE_SESSIONS" -c 32 -settle 10s
}

HALF=2000
for s in $SERVERS; do
  echo "bench-peers: === $s ===" >&2
  case $s in
    impetus) start_impetus impetus localhost ;;
    ejabberd) start_ejabberd ;;
    prosody) start_prosody ;;
  esac
  scenarios "$s"
  case $s in
    ejabberd) stop_ejabberd ;;
    *) kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true ;;
  esac
done

# Impetus archiving every message (XEP-0313, its default): no peer to compare with, since the
# peers run without an archive; the figure shows what the archive costs.
if [ "${MAM:-1}" = 1 ] && [[ " $SERVERS " == *" impetus "* ]]; then
  echo "bench-peers: === impetus with message archive ===" >&2
  MAM_DEFAULT=always start_impetus impetus localhost
  sleep 2
  run "impetus-mam/500" chat -addr "${ADDR[impetus]}:5222" -login-timeout 10s -pairs 500 -window 16 -duration "${CHAT_SECONDS}s"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
fi

# Server-to-server: two Impetus servers, senders on one, receivers on the other.
if [ "${S2S:-1}" = 1 ]; then
  echo "bench-peers: === impetus s2s ===" >&2
  start_impetus impetus localhost "domain \"#xmpp#b.localhost\" {
  XMPP_Role = \"client\"
  Gateway = \"${ADDR[impetus2]}:5269\"
}"
  P1=$SERVER_PID
  start_impetus impetus2 b.localhost "domain \"#xmpp#localhost\" {
  XMPP_Role = \"client\"
  Gateway = \"${ADDR[impetus]}:5269\"
}"
  SERVER_PID="$P1,$SERVER_PID"
  run "impetus-s2s" chat -addr "${ADDR[impetus]}:5222" -addr2 "${ADDR[impetus2]}:5222" -domain2 b.localhost \
    -pairs 50 -window 16 -duration "${CHAT_SECONDS}s"
fi

python3 - "$RESULTS" "$OUT" "$IDLE_SESSIONS" "$HALF" "$(nproc)" <<'PY'
import json, re, sys, time

results, out, idle_n, half, cores = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = {}
for line in open(results):
    r = json.loads(line)
    key = (r.get("label", "").split("/")[0], r["scenario"], r.get("label", "").partition("/")[2], r.get("tls", True))
    runs[key] = r
servers = ["impetus", "ejabberd", "prosody"]

def get(server, scenario, sub="", tls=True):
    r = runs.get((server, scenario, sub, tls))
    return None if r is None or r.get("failed") else r

def metric(f):
    def g(server):
        try:
            v = f(server)
        except (TypeError, KeyError, ZeroDivisionError):
            return None
        return v
    return g

rows = [
    ("STARTTLS + SCRAM-SHA-1 logins/s", True, metric(lambda s: get(s, "login")["rate"]), "≥ 2× ejabberd"),
    ("PLAIN logins/s, no TLS", True, metric(lambda s: get(s, "login", tls=False)["rate"]), ""),
    ("memory per idle TLS session at %d sessions, KiB" % idle_n, False,
     metric(lambda s: get(s, "idle")["bytes_per_session"] / 1024), "≤ ¼ ejabberd, ≤ 16 KiB"),
    ("chat msgs/s, 50 pairs", True, metric(lambda s: get(s, "chat", "50")["rate"]), ""),
    ("chat p99 latency ms, 50 pairs", False, metric(lambda s: get(s, "chat", "50")["p99_ms"]), ""),
    ("chat msgs/s, 500 pairs", True, metric(lambda s: get(s, "chat", "500")["rate"]), ""),
    ("chat p99 latency ms, 500 pairs", False, metric(lambda s: get(s, "chat", "500")["p99_ms"]), ""),
    ("server CPU-seconds per 10,000 msgs (500 pairs)", False,
     metric(lambda s: 10000 * get(s, "chat", "500")["server_cpu_s"] / get(s, "chat", "500")["received"]), ""),
    ("msgs per server CPU-second (500 pairs)", True,
     metric(lambda s: get(s, "chat", "500")["received"] / get(s, "chat", "500")["server_cpu_s"]), "≥ 3× ejabberd, ≥ 5× Prosody"),
    ("chat p99 ms at %d msgs/s offered (half Impetus's peak)" % half, False,
     metric(lambda s: get(s, "chat", "half")["p99_ms"]), "≤ ejabberd"),
    ("msgs/s delivered at that offered rate", True, metric(lambda s: get(s, "chat", "half")["rate"]), ""),
    ("presence deliveries/s (200 users × 20 watchers)", True, metric(lambda s: get(s, "presence")["rate"]), ""),
    ("presence p99 latency ms", False, metric(lambda s: get(s, "presence")["p99_ms"]), ""),
]

def fmt(v):
    if v is None:
        return "failed"
    if v >= 100:
        return "{:,.0f}".format(v)
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f×" % (a / b)

lines = []
stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
loads = [r.get("loadavg", 0) for r in runs.values() if "loadavg" in r]
lines.append("Measured %s by `make bench-peers` on %d cores; one-minute load average during the runs %.1f–%.1f%s." % (
    stamp, cores, min(loads or [0]), max(loads or [0]),
    " (the machine was shared: treat the figures as provisional)" if max(loads or [0]) > cores * 0.75 + 2 else ""))
lines.append("")
lines.append("| metric | Impetus | ejabberd | Prosody | Impetus ÷ ejabberd | Impetus ÷ Prosody | target |")
lines.append("| --- | --- | --- | --- | --- | --- | --- |")
for name, higher, f, target in rows:
    v = [f(s) for s in servers]
    verdict = ""
    if target and v[0] is not None:
        ok = True
        if "2× ejabberd" in target: ok = v[1] is not None and v[0] >= 2 * v[1]
        if "¼ ejabberd" in target: ok = v[1] is not None and v[0] <= v[1] / 4 and v[0] <= 16
        if "3× ejabberd" in target: ok = v[1] is not None and v[2] is not None and v[0] >= 3 * v[1] and v[0] >= 5 * v[2]
        if target == "≤ ejabberd": ok = v[1] is not None and v[0] <= v[1]
        verdict = " (%s)" % ("met" if ok else "not met")
    lines.append("| %s | %s | %s | %s | %s | %s | %s%s |" % (name, fmt(v[0]), fmt(v[1]), fmt(v[2]),
        ratio(v[0], v[1]), ratio(v[0], v[2]), target, verdict))
s2s = runs.get(("impetus-s2s", "chat", "", True))
if s2s and not s2s.get("failed"):
    lines.append("")
    lines.append("Server to server (two Impetus servers, 50 pairs, senders on one and receivers on the other): "
                 "%s msgs/s, p99 %s ms, %d sent, %d received, %s CPU-seconds for both servers." % (
                 fmt(s2s["rate"]), fmt(s2s["p99_ms"]), s2s["sent"], s2s["received"], fmt(s2s["server_cpu_s"])))
mam = runs.get(("impetus-mam", "chat", "500", True))
if mam and not mam.get("failed"):
    lines.append("")
    lines.append("Impetus archiving every message (`mam_default = \"always\"`, both parties' archives, SQLite; 500 pairs): "
                 "%s msgs/s, p99 %s ms, %s msgs per server CPU-second." % (
                 fmt(mam["rate"]), fmt(mam["p99_ms"]), fmt(mam["received"] / mam["server_cpu_s"]) if mam.get("server_cpu_s") else "?"))
lines.append("")
lines.append("What limited each run: the CPU the server and the load tool used (cores: CPU-seconds ÷ wall seconds)."
             " A server near %d cores (Prosody: 1) is the limit; server and load tool together near %d cores means the machine is." % (cores, cores))
lines.append("")
lines.append("| run | server cores | load tool cores | load average | lost | errors | limited by |")
lines.append("| --- | --- | --- | --- | --- | --- | --- |")
for key, r in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], not kv[0][3])):
    name = "%s %s%s%s" % (key[0], key[1], " " + key[2] if key[2] else "", "" if key[3] else " (no TLS)")
    if r.get("failed"):
        lines.append("| %s | | | | | | failed |" % name)
        continue
    sec = r.get("seconds") or 1
    srv, ld = r.get("server_cpu_s", 0) / sec, r.get("load_cpu_s", 0) / sec
    if key[1] == "idle":
        why = "not a rate: memory measurement"
    elif r.get("loadavg", 0) > 1.5 * cores and srv + ld < 0.85 * cores:
        why = "machine (shared with other work: load %.1f)" % r.get("loadavg", 0)
    elif key[0] == "prosody" and srv >= 0.85:
        why = "server (one core)"
    elif srv >= 0.85 * cores:
        why = "server"
    elif srv + ld >= 0.85 * cores:
        why = "machine (CPU shared by server and load tool)"
    elif key[2] == "half":
        why = "offered rate"
    else:
        why = "neither saturated: round trips (window, login steps)"
    lines.append("| %s | %.2f | %.2f | %.1f | %d | %d | %s |" % (name, srv, ld, r.get("loadavg", 0), r.get("lost", 0), r.get("errors", 0), why))

section = "<!-- bench-peers:begin -->\n" + "\n".join(lines) + "\n<!-- bench-peers:end -->"
doc = open(out).read()
if "<!-- bench-peers:begin -->" in doc:
    doc = re.sub(r"<!-- bench-peers:begin -->.*?<!-- bench-peers:end -->", lambda m: section, doc, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n## Side by side with ejabberd and Prosody (`make bench-peers`)\n\n" + section + "\n"
open(out, "w").write(doc)
print("\n".join(lines))
PY
echo "bench-peers: results in $OUT (raw: $RESULTS, kept with KEEP=1)"
