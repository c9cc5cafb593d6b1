import torch


def peak_extra_bytes(fn, device='cpu') -> int:
    """Peak of the memory ``fn()`` allocates beyond what was allocated before.

    On CUDA this is the caching allocator's peak statistic. On CPU, where
    torch keeps no such statistic, it replays torch.profiler's memory events
    (``profile_memory=True``): the running sum of allocated minus freed bytes,
    which is deterministic for a given program.

    Args:
        fn (callable): The work to measure, called once with no arguments.
        device (str | torch.device): Where ``fn`` allocates.

    Returns:
        int: Peak extra bytes.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]']
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak
