"""The GPU harness: ``python -m benchmarks.gpu`` (cli), one process per row (row), the rows'
runner and plan (rows), the frameworks (keras_runner on JAX, torch_runner), the table (report),
and the prepared run for the lent GPU machine (run.sh, wheels.sh)."""
