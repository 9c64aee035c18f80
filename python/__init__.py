"""The build side of aotriton: the kernel rules, the generator (generate.py),
the compile step and the tuners. Its scripts run by path (python/generate.py,
python/tune.py, ...); everything imports it as `python.<module>` from the repo
root, where tritonsrc/ (the Triton kernels) is a package too."""
