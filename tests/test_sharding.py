"""Selection sharded over 8 fake CPU devices gives the single-device result.

The device count must be set before JAX starts, so the check runs in a subprocess."""

from __future__ import annotations

import textwrap

from multidevice import run_on_8_devices

SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    from jax.sharding import AxisType
    from jax.sharding import NamedSharding, PartitionSpec as P
    from zipcal_jax.greedy import token_histogram
    from zipcal_jax.select import prepare_sets, select
    assert len(jax.devices()) == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)
    out = {}
    for n in (203, 1000):  # 203: not a multiple of 8, exercises padding rows
        ids = (rng.zipf(1.3, (n, 24)) % 700).astype(np.int32)
        mask = rng.random((n, 24)) > 0.2
        table = rng.integers(-1, 400, 700).astype(np.int32)
        S, sizes, valid, prio, C = prepare_sets(ids, mask, table, mesh)
        spec = str(S.sharding.spec)
        single = select(ids, 60, mask=mask, concepts=table, batch=16)
        sharded = select(ids, 60, mask=mask, concepts=table, batch=16, mesh=mesh)
        pooled1 = select(ids, 60, mask=mask, concepts=table, pool_size=50, seed=3)
        pooled8 = select(ids, 60, mask=mask, concepts=table, pool_size=50, seed=3, mesh=mesh)
        m = (-n) % 8
        ids8 = np.concatenate([ids, np.zeros((m, 24), np.int32)])
        mask8 = np.concatenate([mask, np.zeros((m, 24), bool)])
        rows = NamedSharding(mesh, P("data", None))
        hist8 = token_histogram(jax.device_put(ids8, rows), jax.device_put(mask8, rows), table, 400)
        hist1 = token_histogram(ids, mask, table, 400)
        out[n] = dict(spec=spec, shards=len(S.sharding.device_set),
                      hist1=np.asarray(hist1).tolist(), hist8=np.asarray(hist8).tolist(),
                      single=single.indices.tolist(), sharded=sharded.indices.tolist(),
                      gains1=single.gains.tolist(), gains8=sharded.gains.tolist(),
                      pooled1=pooled1.indices.tolist(), pooled8=pooled8.indices.tolist())
    print(json.dumps(out))
    """
)


def test_sharded_selection_equals_single_device():
    results = run_on_8_devices(SCRIPT)
    for n, r in results.items():
        assert r["shards"] == 8, n
        assert r["spec"] == "P('data', None)", r["spec"]
        assert r["sharded"] == r["single"], n
        assert r["gains8"] == r["gains1"], n
        assert r["pooled8"] == r["pooled1"], n
        assert len(set(r["single"])) == 60
        assert r["hist8"] == r["hist1"] and sum(r["hist1"]) > 0
