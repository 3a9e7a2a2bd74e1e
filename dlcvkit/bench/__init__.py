"""Throughput benchmarks behind `dlcvkit bench`: one small module per measurement (augment, train, ema, miou,
infer, loader), all timed by `timing` (warm-up, repeats, median and spread, device sync) and reported as JSON records;
`session` is what every command does around its measurement."""
