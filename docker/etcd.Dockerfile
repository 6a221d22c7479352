# etcd for docker/compose.yaml: Debian 12's etcd-server 3.4 (the version the cluster is tested
# with; where Docker Hub is reachable, quay.io/coreos/etcd:v3.4 works the same way).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
EXPOSE 2379
ENTRYPOINT ["/usr/bin/etcd", "--data-dir", "/var/lib/etcd-data", "--name", "etcd", \
            "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://etcd:2379", \
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380", \
            "--initial-cluster", "etcd=http://127.0.0.1:2380"]
