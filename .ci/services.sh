#!/bin/sh
# The shared store's services for the test suite: Redis on 127.0.0.1:6379 and
# PostgreSQL on 127.0.0.1:5432 (trust auth). Start them if installed but stopped;
# install them with apt-get if missing. The suite fails (never skips) without them.
set -e
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! redis_up; then
    command -v redis-server >/dev/null 2>&1 || apt-get install -y -q redis-server
    service redis-server start >/dev/null 2>&1 || redis-server --daemonize yes --save "" --bind 127.0.0.1
fi
if ! pg_up; then
    command -v pg_isready >/dev/null 2>&1 || apt-get install -y -q postgresql
    service postgresql start >/dev/null 2>&1 || true
fi
for i in $(seq 1 50); do redis_up && pg_up && exit 0; sleep 0.2; done
redis_up || echo "Redis is not answering on 127.0.0.1:6379" >&2
pg_up || echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2
exit 1
