"Child process of `bench/attention.py`: print the peak resident bytes one call of a case adds."
import gc


def rss(field):
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ':'))


def child(impl, shape, backward):
    from attention import run_case
    fn, _ = run_case(impl, shape, backward)
    fn(); gc.collect()                      # first call: lazy initialisation is not the algorithm's memory
    base = rss('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')   # reset VmHWM to the current RSS
    fn()
    print(rss('VmHWM') - base)
