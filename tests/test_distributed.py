"""Slides on a dask.distributed LocalCluster of 2 worker processes (segzoo.slides.run.cluster):
outputs byte-identical to the single-process run, a killed worker, a stopped client that
resumes, failing slides reported in the run summary, no dask on the single-process path."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed")

from segzoo import predict_slides
from segzoo.errors import SegzooError
from segzoo.predict.source import ModelSource
from segzoo.slides.options import SlideOptions
from segzoo.slides.results.summary import SUMMARY_FILENAME
from segzoo.slides.run.orchestrator import dask_executor, slide_inputs

MODEL = "unet-monuseg"
OPTIONS = {"chunk_size": 256, "halo": 32, "progress": False}


def _run(predictor, slides, out, *, client=None, on_chunk=None, **options):
    """segzoo.predict_slides with OPTIONS (and `options`), on the cluster `client` when given."""
    executor = None if client is None else dask_executor(client)
    return predict_slides(predictor, slides, out, options=SlideOptions(**{**OPTIONS, **options}), executor=executor,
                          on_chunk=on_chunk)


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Three small synthetic H&E slides, one per reader: Aperio .svs (OpenSlide), OME-TIFF
    (tifffile), plain PNG (read whole, assumed at the model's resolution)."""
    from slide_fixtures import synthetic_he, write_aperio_tiff, write_ome_tiff

    folder = tmp_path_factory.mktemp("slides")
    write_aperio_tiff(folder / "a.svs", synthetic_he(512, 768, seed=1), mpp=0.25, levels=2, tile=256)
    write_ome_tiff(folder / "b.ome.tif", synthetic_he(512, 640, seed=2, tissue_fraction=0.7), mpp=0.25, levels=2)
    Image.fromarray(synthetic_he(512, 576, seed=3, tissue_fraction=0.9)).save(folder / "c.png")
    return folder


@pytest.fixture(scope="module")
def predictor():
    import segzoo

    return segzoo.load(MODEL, precision="int8")


@pytest.fixture(scope="module")
def reference(slides, predictor, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The single-process run of the folder: slide name -> output key -> bytes."""
    out = tmp_path_factory.mktemp("single")
    summaries = _run(predictor, [slides], out)
    assert [Path(s.slide).name for s in summaries] == ["a.svs", "b.ome.tif", "c.png"]
    assert all(s.status == "ok" and s.nuclei > 20 for s in summaries), [s.to_dict() for s in summaries]
    assert all(set(s.stage_seconds) == {"read", "network", "post"} for s in summaries)
    rows = _summary(out)
    assert [(r["slide"], r["status"], int(r["nuclei"])) for r in rows] == [(s.slide, "ok", s.nuclei) for s in summaries]
    return {Path(s.slide).name: {k: p.read_bytes() for k, p in s.outputs.items()} for s in summaries}


@pytest.fixture(scope="module")
def client():
    from segzoo.slides.run.cluster import local_cluster

    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the worker processes start with this environment
    try:
        with local_cluster(2) as client:
            yield client
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def _summary(out: Path) -> list[dict]:
    with open(out / SUMMARY_FILENAME, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _assert_equal(summaries, reference) -> None:
    for s in summaries:
        assert s.status == "ok", s.to_dict()
        expected = reference[Path(s.slide).name]
        assert set(s.outputs) == set(expected)
        for key, data in expected.items():
            assert s.outputs[key].read_bytes() == data, (s.slide, key)
        assert not (s.outputs["geojson"].parent / f"{s.outputs['geojson'].stem}.segzoo-chunks").exists()


def test_a_slide_and_a_folder_on_the_cluster_equal_the_single_process_run(slides, reference, predictor, client,
                                                                           tmp_path):
    one = _run(predictor, [slides / "a.svs"], tmp_path / "one",
               client=client.scheduler.address)  # an address, as from `--dask tcp://HOST:PORT`
    assert len(one) == 1 and one[0].chunks >= 4 and one[0].tissue_mpx > 0 and one[0].seconds > 0
    _assert_equal(one, reference)
    summaries = _run(predictor, [slides], tmp_path / "all", client=client)
    assert len(summaries) == 3
    _assert_equal(summaries, reference)
    assert all(set(s.stage_seconds) == {"read", "network", "post"} for s in summaries)  # timed on the workers
    rows = _summary(tmp_path / "all")
    assert [(Path(r["slide"]).name, r["status"], r["error"]) for r in rows] == [
        ("a.svs", "ok", ""), ("b.ome.tif", "ok", ""), ("c.png", "ok", "")]
    # each worker process loaded the model once, with one onnxruntime thread (2 workers on 2 CPUs)
    from dask.system import CPU_COUNT

    def models_loaded():  # runs in each worker process: what its model cache holds
        from segzoo.slides.run.worker import _models

        return [(key, predictor.run_batch.session.get_session_options().intra_op_num_threads)
                for key, (predictor, _) in _models.items()]

    threads = max(1, CPU_COUNT // 2)
    expected = [((ModelSource(MODEL, "int8", "onnx"), threads), threads)]
    assert all(entries == expected for entries in client.run(models_loaded).values())


def test_a_worker_killed_mid_run_has_its_chunks_redone_elsewhere(slides, reference, predictor, client, tmp_path):
    killed = {}
    pids = client.run(os.getpid)

    def kill_a_busy_worker(slide, chunk, nuclei):
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if killed or not busy:
            return
        address = min(busy)
        killed[address] = list(busy[address])
        os.kill(pids[address], signal.SIGKILL)  # as the kernel's OOM killer would

    summaries = _run(predictor, [slides], tmp_path, client=client, on_chunk=kill_a_busy_worker)
    (address, keys), = killed.items()  # killed once, early: about 10 chunks were left
    assert keys  # it died holding tasks
    assert address not in client.nthreads()  # the process is gone (its nanny starts a new one)
    _assert_equal(summaries, reference)
    client.wait_for_workers(2, timeout=60)


def test_a_stopped_client_resumes_from_the_chunks_done(slides, reference, predictor, client, tmp_path):
    seen = []

    def stop_after_three(slide, chunk, nuclei):
        seen.append(chunk)
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C on the client

    with pytest.raises(KeyboardInterrupt):
        _run(predictor, [slides], tmp_path, client=client, on_chunk=stop_after_three)
    rows = _summary(tmp_path)  # written on the way out: nothing finished
    assert [r["status"] for r in rows] == ["error"] * 3 and all("run stopped" in r["error"] for r in rows)
    done = list(tmp_path.glob("*.segzoo-chunks/chunk_*.npz"))
    assert len(done) >= 3
    assert not list(tmp_path.glob("*.geojson"))

    summaries = _run(predictor, [slides], tmp_path, client=client)
    assert sum(s.chunks_resumed for s in summaries) >= 3
    _assert_equal(summaries, reference)
    assert [r["status"] for r in _summary(tmp_path)] == ["ok"] * 3


def _bad_slides(folder: Path, good: Path) -> list[Path]:
    from slide_fixtures import synthetic_he, write_aperio_tiff

    folder.mkdir()
    (folder / "broken.svs").write_bytes(b"II*\x00 not really a slide")
    write_aperio_tiff(folder / "nompp.tif", synthetic_he(256, 256), mpp=None, levels=1, tile=128)
    return [folder / "broken.svs", good, folder / "nompp.tif"]


@pytest.mark.parametrize("where", ["single process", "cluster"])
def test_failing_slides_are_reported_and_the_others_complete(slides, reference, predictor, client, tmp_path, where):
    files = _bad_slides(tmp_path / "in", slides / "a.svs")
    if where == "single process":  # the good slide is left out here: the cluster run shows it completes
        files = [files[0], files[2]]
    summaries = _run(predictor, files, tmp_path / "out", client=client if where == "cluster" else None)
    by_name = {Path(s.slide).name: s for s in summaries}
    assert by_name["broken.svs"].status == "error" and "broken.svs" in by_name["broken.svs"].error
    assert by_name["nompp.tif"].status == "error" and "no microns-per-pixel" in by_name["nompp.tif"].error
    rows = {Path(r["slide"]).name: r for r in _summary(tmp_path / "out")}
    assert rows["broken.svs"]["status"] == "error" and "truncated or damaged" in rows["broken.svs"]["error"]
    assert "mpp=" in rows["nompp.tif"]["error"] and by_name["nompp.tif"].argument == "mpp" and rows["nompp.tif"]["nuclei"] == "0"
    if where == "cluster":
        _assert_equal([by_name["a.svs"]], reference)
        assert rows["a.svs"]["status"] == "ok"


def test_failing_tasks_fail_their_slide_with_the_workers_error(slides, predictor, client, tmp_path):
    # the workers cannot load the model they are told to: every task raises there
    from segzoo.predict.predictor import Predictor

    elsewhere = Predictor(predictor.run_batch, predictor.config, runtime="onnx",
                          source=ModelSource("no-such-model", "int8", "onnx"))
    summaries = _run(elsewhere, [slides / "c.png"], tmp_path, client=client, retries=0)
    assert summaries[0].status == "error" and "failed on the cluster" in summaries[0].error
    assert "no-such-model" in summaries[0].error
    assert not (tmp_path / "c.geojson").exists() and (tmp_path / "c.segzoo-chunks" / "manifest.json").exists()


def test_a_worker_with_another_model_is_refused(predictor):
    from segzoo.slides.plan.manifest import model_fingerprint
    from segzoo.slides.run.worker import worker_predictor

    key = ModelSource(MODEL, "int8", "onnx")
    assert worker_predictor(key, model_fingerprint(predictor)) is worker_predictor(key)  # loaded once, kept
    with pytest.raises(SegzooError, match="other outputs than the client's"):
        worker_predictor(key, list(np.zeros(64)))


def test_options_are_checked(slides, tmp_path):
    with pytest.raises(SegzooError, match="not both"):
        dask_executor("tcp://127.0.0.1:9", workers=2)
    with pytest.raises(SegzooError, match="positive number"):
        dask_executor(workers=0)
    with pytest.raises(SegzooError, match="halo must be"):
        SlideOptions(halo=-1)
    assert [i.path for i in slide_inputs([slides / "a.svs", slides, slides / ".." / slides.name / "c.png"])] == [
        slides / "a.svs", slides / "b.ome.tif", slides / "c.png"]  # each slide once, in order
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(b"")
    with pytest.raises(SegzooError, match="both write a.geojson"):
        predict_slides(MODEL, [slides / "a.svs", tmp_path / "x" / "a.png"], tmp_path)


def test_the_single_process_path_imports_no_dask(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "from segzoo import predict_slides\n"
        "from segzoo.slides.options import SlideOptions\n"
        f"Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save({str(tmp_path / 'blank.png')!r})\n"
        f"[s] = predict_slides('unet-monuseg', [{str(tmp_path / 'blank.png')!r}], {str(tmp_path / 'out')!r},"
        " precision='int8', options=SlideOptions(progress=False))\n"
        "assert s.status == 'ok', s.to_dict()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "out" / SUMMARY_FILENAME).exists()
