#!/bin/bash
# kit Citus lab container entrypoint: `etcd` runs the single etcd member (the postgres-ha image's own
# entrypoint), `patroni` writes patroni.yml from the environment and runs Patroni 3.1.2 in its Citus mode as
# the postgres user. Members, etcd and toxiproxy are addressed by fixed IP, never by name: a disconnected
# container stalls on every DNS lookup.
#
# Every node's postgresql.connect_address is its toxiproxy endpoint (CONNECT_ADDRESS): that is the address
# Patroni registers in the coordinator's pg_dist_node (citus_add_node / citus_update_node), the one the
# group's replica streams from, and the one Citus uses between nodes. Cutting a node's proxy therefore cuts
# it off from the coordinator (and from its own replica). The REST API stays on the node's own IP.
set -euo pipefail

case "${1:-patroni}" in
etcd)
    exec /usr/local/bin/kit-lab-entrypoint etcd
    ;;
patroni)
    conf=/var/lib/postgresql/patroni.yml
    umask 077
    cat > "$conf" <<YAML
scope: ${PATRONI_SCOPE:-kit-citus}
name: ${NODE_NAME}
log:
  level: INFO
restapi:
  listen: 0.0.0.0:8008
  connect_address: ${NODE_IP}:8008
citus:
  group: ${CITUS_GROUP}
  database: ${CITUS_DATABASE:-citus}
etcd3:
  hosts: ${ETCD_HOST}:2379
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: ${SYNCHRONOUS_MODE:-true}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        wal_sender_timeout: 5s
        wal_receiver_timeout: 5s
        max_connections: 200
        shared_buffers: 64MB
        citus.node_connection_timeout: 5s
  initdb:
    - encoding: UTF8
    - no-sync
postgresql:
  listen: 0.0.0.0:5432
  connect_address: ${CONNECT_ADDRESS}
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
