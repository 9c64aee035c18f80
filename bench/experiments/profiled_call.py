"""The profiled region of the *_one_call.py scripts that ncu reads with --profile-from-start off."""


def profile_one_call(run, warmup=3):
    """`warmup` calls (JIT compiles, allocator, caches), then one call between cudaProfilerStart/Stop."""
    import torch
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    run()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
