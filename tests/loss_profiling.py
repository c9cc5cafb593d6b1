"""Measurement helpers for the loss tests and tools/benchmark_losses.py.

Test-only: they read torch.profiler internals (memory events, the event
tree), which is fine for measuring but nothing a package should ship.

* :func:`peak_extra_bytes`: peak memory a call allocates beyond what was
  allocated before it.
* :func:`top_level_aten_ops`: the aten operators a call dispatches, not
  counting the ones other aten operators call internally (one per kernel
  launch or CPU loop, roughly); deterministic for a given program.
* :func:`host_syncs`: the operators that copy a device value to the host
  (``.item()``, ``bool(tensor)``, boolean-mask indexing, ...): each is a
  device synchronisation on CUDA.
"""
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

#: Operators whose presence means a device -> host value transfer, and the
#: losses' labelled read of their value checks (a ``.tolist()``, which on
#: CPU dispatches no copy the profiler would see).
SYNC_OPS = ('aten::item', 'aten::_local_scalar_dense', 'aten::is_nonzero',
            'aten::nonzero', 'aten::nonzero_static', 'aten::masked_select',
            'aten::unique', 'aten::_unique2', 'mmrankkd.read_value_checks')


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


def aten_op_counts(fn) -> Counter:
    """name -> count of the top-level aten operators ``fn()`` dispatches on
    the calling thread and autograd's (backward included): aten events with
    no aten event above them."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts = Counter()
    for event in prof.events():
        if not event.name.startswith('aten::'):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith('aten::'):
            parent = parent.cpu_parent
        if parent is None:
            counts[event.name] += 1
    return counts


def top_level_aten_ops(fn) -> int:
    """How many top-level aten operators ``fn()`` dispatches (see
    :func:`aten_op_counts`)."""
    return sum(aten_op_counts(fn).values())


def host_syncs(fn) -> Counter:
    """name -> count of the device -> host transfers ``fn()`` makes, at any
    depth (e.g. ``aten::is_nonzero`` for ``bool(tensor)``)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return Counter(e.name for e in prof.events() if e.name in SYNC_OPS)
