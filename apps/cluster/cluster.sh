#!/bin/sh
# One nats-server, two front-ends and three workers on this host, as a
# compose file would start them: each "service" is a process with its log
# in $DIR. Stops everything on Ctrl-C. Usage:
#   apps/cluster/cluster.sh [CORRELATOR_BINARY]
# then send syslog to 127.0.0.1:5141 or :5142 (TCP), or RELP to :2514 or
# :2515, and watch $DIR/worker-*.json.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
correlator=${1:-correlator}
DIR=${DIR:-$(mktemp -d)}
echo "logs and state in $DIR"
cd "$DIR"
pids=""
stop() { kill $pids 2>/dev/null; wait; }
trap stop INT TERM EXIT

# nats: JetStream on 127.0.0.1:4222, its store in $DIR/jetstream.
nats-server -js -a 127.0.0.1 -p 4222 -sd "$DIR/jetstream" 2> nats.log &
pids="$pids $!"
sleep 1

# worker-1..3: share the 16 partitions (each takes about 6).
for n in 1 2 3; do
    mkdir -p "worker-$n"
    "$correlator" run --app "$here/worker.toml" -o "system.run_dir=$DIR/worker-$n" \
        > "worker-$n.json" 2> "worker-$n.log" &
    pids="$pids $!"
done

# front-1, front-2: syslog in on their own ports, into the stream.
for n in 1 2; do
    "$correlator" run --app "$here/front.toml" \
        -o "listen.tcp=127.0.0.1:514$n" -o "listen.relp=127.0.0.1:251$((3 + n))" \
        2> "front-$n.log" &
    pids="$pids $!"
done
wait
