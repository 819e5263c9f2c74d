"""chatd's comparison harness: reactor vs threaded vs asyncio (vs Redis), one report.

Run ``python -m bench --help``. Modules, one job each: procstat (what /proc says),
stats (percentiles and the validity rule), servers (start and stop servers under test),
driver (the lean socket driver; what its bytes mean is the load library ``chatload``),
locustrun (Locust as a subprocess), scenarios (the matrix), report and plots (the output).
"""
