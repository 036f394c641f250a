"""The depthwise benchmark trains a layout with the small-map matrix path and its convolving twin, and reports
the ratio; the twin has the same weights and outputs, with the path off."""

import torch

from metaformer.bench.depthwise import bench_layout, build_parser, main, without_matmul
from metaformer.presets import create_model
from mixers.conv import DepthwiseConv2d


def test_the_twin_convolves_with_the_same_weights_and_outputs():
    torch.manual_seed(0)
    model = create_model("poolformer_cpu", mixer="sepconv", in_chans=1, num_classes=10).eval()
    twin = without_matmul(model)
    convs = [m for m in twin.modules() if isinstance(m, DepthwiseConv2d)]
    assert convs and not any(m.small_map_matmul for m in convs)
    assert all(m.small_map_matmul for m in model.modules() if isinstance(m, DepthwiseConv2d))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=1e-4, atol=1e-5)


def test_a_layout_reports_both_sides_and_their_ratio(tmp_path, capsys):
    args = build_parser().parse_args(["--batch-size", "4", "--rounds", "2", "--iters", "1"])
    record = bench_layout(["sepconv", "pool", "dwconv", "sepconv"], args)
    matrix, conv = record["rows"]
    assert (matrix["name"], conv["name"], record["reference"]) == ("matrix", "conv", "conv")
    assert len(matrix["ratios"]) == 2 and matrix["median_ratio"] > 0
    out = tmp_path / "dw.json"
    argv = ["--layout", "pool,pool,sepconv,sepconv", "--batch-size", "4", "--rounds", "1", "--iters", "1"]
    argv += ["--threads", str(torch.get_num_threads())]  # the process keeps what main sets
    assert main([*argv, "--json", str(out)]) == 0
    assert "pool,pool,sepconv,sepconv" in capsys.readouterr().out and out.exists()
