"""Benchmarks (not tests): throughput against timm (`python -m metaformer.bench`), the cost of each token mixer as
the token count grows (`python -m metaformer.bench.scaling`), and the training loop against a bare step loop
(`python -m metaformer.bench.loop`). Figures and commands are recorded in experiments/BENCHMARKS.md.
"""
