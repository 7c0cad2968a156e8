#!/usr/bin/env bash
# Start the machine's PostgreSQL and RabbitMQ if they are down (dev machines and CI; no Docker).
# Leaves running services alone; with Docker, use docker-compose.yml instead.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
for _ in $(seq 1 60); do port_open 5432 && break; sleep 0.5; done
port_open 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }

if ! port_open 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  # await_startup fails if called before the node exists: retry until it answers.
  for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi
for _ in $(seq 1 60); do port_open 5672 && break; sleep 0.5; done
port_open 5672 || { echo "RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
# RabbitMQ's management console, which the service is watched with (queues, connections named
# after each process): enabled when the plugin is installed.
if ! port_open 15672 && rabbitmq-plugins list -m 2>/dev/null | grep -qx rabbitmq_management; then
  echo "enabling the RabbitMQ management console"
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null ||
    echo "could not enable rabbitmq_management; the service runs without the console" >&2
  for _ in $(seq 1 30); do port_open 15672 && break; sleep 0.5; done
fi
echo "PostgreSQL and RabbitMQ are up"
