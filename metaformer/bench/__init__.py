"""Benchmarks (not tests): throughput against timm (`python -m metaformer.bench`), the cost of each token mixer as
the token count grows (`python -m metaformer.bench.scaling`), the training loop against a bare step loop
(`python -m metaformer.bench.loop`), and depthwise convolutions on small maps as a matrix against the convolution
(`python -m metaformer.bench.depthwise`). Figures and commands are recorded in experiments/BENCHMARKS.md.
"""
