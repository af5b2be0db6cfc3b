"""A private Redis Cluster (3 masters + 3 replicas on spare ports) for this directory's tests,
started once per module from the redis-server binary and torn down after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gateway.settings import Settings
from tests.servers import PrivateRedisCluster
from tests.support import settings_for


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed for the cluster tests")
    cluster = PrivateRedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def cluster_settings(pg_dsn: str, cluster: PrivateRedisCluster, node_id: str) -> Settings:
    s = settings_for(pg_dsn, cluster.url, node_id)
    return replace(s, store=replace(s.store, redis_cluster=True, redis_shards=2))
