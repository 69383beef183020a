"""Running slide jobs: one orchestrator (orchestrator: open, plan, run the chunks, write, report)
with two executors, threads in this process (local) and a dask.distributed cluster (cluster, with
its worker side in worker); a chunk's reading (chunk_reading) and inference (chunk_inference)."""
