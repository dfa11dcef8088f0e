"""Scripts that print figures and save them under benchmarks/results/. Each imports the mnist_gan package (and a
benchmark beside it as `benchmarks.NAME`), never tests/; run one from the repository root:

    python -m benchmarks.compare_presets --help
"""
