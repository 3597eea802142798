#!/bin/bash
# kit-lab container entrypoint: `etcd` runs a single etcd member, `patroni` writes patroni.yml from the
# environment and runs Patroni as the postgres user. Members are addressed by fixed IP, never by name:
# a disconnected container stalls on every DNS lookup.
set -euo pipefail

case "${1:-patroni}" in
etcd)
    exec etcd --name "${ETCD_MEMBER:-etcd1}" --data-dir /var/lib/etcd-data \
        --listen-client-urls "http://0.0.0.0:2379" --advertise-client-urls "http://${NODE_IP}:2379" \
        --listen-peer-urls "http://0.0.0.0:2380" --initial-advertise-peer-urls "http://${NODE_IP}:2380" \
        --initial-cluster "${ETCD_MEMBER:-etcd1}=http://${NODE_IP}:2380" \
        --initial-cluster-state new --initial-cluster-token kit-lab \
        --heartbeat-interval 100 --election-timeout 1000
    ;;
patroni)
    conf=/var/lib/postgresql/patroni.yml
    umask 077
    cat > "$conf" <<YAML
scope: kit-lab
name: ${NODE_NAME}
log:
  level: INFO
restapi:
  listen: 0.0.0.0:8008
  connect_address: ${NODE_IP}:8008
etcd3:
  hosts: ${ETCD_HOST}:2379
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: ${SYNCHRONOUS_MODE:-false}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        wal_sender_timeout: 5s
        wal_receiver_timeout: 5s
        max_connections: 300
        shared_buffers: 64MB
  initdb:
    - encoding: UTF8
postgresql:
  listen: 0.0.0.0:5432
  connect_address: ${NODE_IP}:5432
  data_dir: /var/lib/postgresql/data/pg
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
      password: "${PG_PASSWORD}"
    replication:
      username: replicator
      password: "${PG_PASSWORD}"
    rewind:
      username: rewinder
      password: "${PG_PASSWORD}"
  basebackup:
    - checkpoint: fast
  parameters:
    unix_socket_directories: /var/run/postgresql
  pg_hba:
    - local all all trust
    - local replication all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host replication replicator ${LAB_SUBNET} scram-sha-256
    - host all all ${LAB_SUBNET} scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
YAML
    chown postgres:postgres "$conf"
    exec runuser -u postgres -- patroni "$conf"
    ;;
*)
    exec "$@"
    ;;
esac
