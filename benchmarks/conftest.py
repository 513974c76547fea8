"""Prints each implementation's time as a ratio of nn.LSTM's, measured in this same run."""


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not bs.benchmarks:
        return
    ref = {}
    for b in bs.benchmarks:
        info = b.extra_info
        if info.get("impl") == "nn-lstm":
            ref[(info["mode"], info["T"], info["H"])] = b.stats.median
    terminalreporter.write_sep("-", "time relative to nn.LSTM (same run; lower is faster)")
    for b in sorted(bs.benchmarks, key=lambda b: (b.extra_info.get("T", 0), b.extra_info.get("H", 0), b.extra_info.get("mode", ""), b.extra_info.get("impl", ""))):
        info = b.extra_info
        base = ref.get((info.get("mode"), info.get("T"), info.get("H")))
        ratio = f"{b.stats.median / base:6.2f}x" if base else "   n/a"
        terminalreporter.write_line(f"{info.get('impl', b.name):16s} {info.get('mode', ''):9s} B={info.get('B')} T={info.get('T'):<4} "
                                    f"H={info.get('H'):<4} median {b.stats.median * 1e3:8.2f} ms  {ratio}")
