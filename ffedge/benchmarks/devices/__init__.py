"""``ffbench --device``: measure on the edge device itself.

One file, one job:

- ``sysinfo``: the device block of a report (board, OS, CPU, runtime versions, clocks, thermal)
- ``thermal``, ``clocks``: ``/sys/class/thermal`` and cpufreq, ``jetson_clocks`` lock/restore
- ``jetson``: Jetson detection, L4T -> JetPack, TensorRT version, ``nvpmodel -q``
- ``tegrastats``: rail power sampled in the background, energy per frame
- ``session``: what a local run on a device wraps around the benchmark
- ``remote``: run ``ffbench`` on another machine over the system ``ssh``/``scp``
- ``cache_keys``: content hashes of artifacts, the on-device TensorRT engine cache key
- ``android`` and ``benchmark_model``: LiteRT's ``benchmark_model`` over ``adb`` and its report
- ``trtexec``: the ``trtexec`` performance summary
- ``side_by_side``: reports from several devices in one table
"""

DEVICES = ("local", "linux", "jetson", "android")
