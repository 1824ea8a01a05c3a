"""Issue 19: a labelled benchmark of small training programs that measures gw.diagnose against two baselines."""
