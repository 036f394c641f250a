"""The loop benchmark trains with the engine's loop and a bare loop on the same config and reports both."""

from metaformer.bench.loop import bench, load_config


def test_loop_benchmark_reports_both_loops():
    cfg = load_config(
        ["data=synthetic", "data.num_train=64", "trainer.batch_size=16", "trainer.precision=fp32"]
    )
    record = bench(cfg, batches=2, rounds=2)
    assert record["data"] == "synthetic" and record["batches_per_round"] == 2
    assert len(record["ratios"]) == 2 and record["median_ratio"] > 0
    assert all(v > 0 for v in record["loop_img_per_s"] + record["bare_img_per_s"])
