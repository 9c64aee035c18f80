"""A stand-in for a Triton / Gluon kernel in launcher tests: `kernel[grid](*args, **kwargs)` records
(grid, args, kwargs) in `calls` instead of compiling and running anything."""


class KernelRecorder:
    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
        return call
