"""Scale-out with ComfyUI-Distributed: a master and two workers on 127.0.0.1, each a real ComfyUI server with this
pack and its own copy of ComfyUI-Distributed, run the text-to-image chain with DistributedSeed feeding both seeds
and DistributedCollector before SaveImage, queued through POST /distributed/queue.

Checked: every worker ran its share, the master collected every image, each image equals a single server's image at
the seed its participant was given (the master keeps S; DistributedSeed gives worker_<k> S + k + 1), pixel for pixel,
and no two collected images are the same, with one generator per batch (the default) and with per_image_seeds.

Needs what the other real-server tests need (COMFYUI_DIR and ComfyUI's requirements, see tests/comfy_server.py)
plus a ComfyUI-Distributed checkout (1.4.4 is vendored beside the pack's ComfyUI snapshots; it has no Python
requirements of its own): COMFYUI_DISTRIBUTED_DIR, by default ../shared/vendor/ComfyUI-Distributed-1.4.4.
"""

import io
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

from core.sampling import image_seeds  # noqa: E402
from pack import EXAMPLES, ROOT  # noqa: E402
import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import ServerError, free_port, running_servers  # noqa: E402

DISTRIBUTED_DIR = Path(os.environ.get("COMFYUI_DISTRIBUTED_DIR")
                       or ROOT.parent / "shared" / "vendor" / "ComfyUI-Distributed-1.4.4")
if not (DISTRIBUTED_DIR / "nodes" / "utilities.py").is_file():
    pytest.skip(f"no ComfyUI-Distributed checkout at {DISTRIBUTED_DIR}; set COMFYUI_DISTRIBUTED_DIR to one "
                "(github.com/robertvoy/ComfyUI-Distributed, 1.4.4 tested)", allow_module_level=True)

# A name without the version's dots: ComfyUI imports each custom-node folder as a module named after it.
DISTRIBUTED_NAME = "ComfyUI-Distributed"
CONFIG = f"custom_nodes/{DISTRIBUTED_NAME}/gpu_config.json"
WORKER_IDS = ["w1", "w2"]
SEED = 1000
RUN_TIMEOUT = 120.0
PRIOR, DECODER, SAVE = "5", "9", "12"  # node ids in the API example
DIST_SEED, COLLECTOR = "20", "21"  # the nodes this test adds


def master_config(worker_ports: list[int]) -> dict:
    """The master's gpu_config.json (schema: ComfyUI-Distributed's utils/config.py): the workers as remote servers
    that are already running, so the master starts none of them itself."""
    workers = [{"id": worker_id, "name": worker_id, "host": "127.0.0.1", "port": port, "type": "remote",
                "enabled": True} for worker_id, port in zip(WORKER_IDS, worker_ports)]
    return {"master": {"host": ""}, "workers": workers,
            "settings": {"auto_launch_workers": False, "master_delegate_only": False}}


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master, [worker 1, worker 2]): three servers started at once, the master told the workers' ports."""
    base = tmp_path_factory.mktemp("distributed")
    worker_ports = distinct_free_ports(len(WORKER_IDS))
    common = dict(comfyui_dir=COMFYUI_DIR, python=COMFYUI_PYTHON, extra_args=["--enable-cors-header"],
                  extra_custom_nodes={DISTRIBUTED_NAME: DISTRIBUTED_DIR})
    master = dict(common, base=base / "master", files={CONFIG: json.dumps(master_config(worker_ports))})
    workers = [dict(common, base=base / worker_id, port=port) for worker_id, port in zip(WORKER_IDS, worker_ports)]
    try:
        with running_servers(master, *workers) as (master_server, *worker_servers):
            yield master_server, worker_servers
            # ComfyUI-Distributed's SIGTERM handler turns a stop into a full interpreter shutdown (seconds of
            # garbage collection per server); these servers hold nothing worth a graceful exit.
            for server in (master_server, *worker_servers):
                server.process.kill()
    except ServerError as error:
        pytest.fail(str(error))


# --- workflows ---------------------------------------------------------------------------------------------------

def plain_prompt(seed: int, batch: int, per_image_seeds: bool) -> dict:
    """The API example at 256×256 with a few steps, one seed for both samplers."""
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_text_to_image.json").read_text(encoding="utf-8"))
    prompt[PRIOR]["inputs"].update(width=256, height=256, steps=3, batch_size=batch, seed=seed,
                                   per_image_seeds=per_image_seeds)
    prompt[DECODER]["inputs"].update(steps=2, seed=seed, per_image_seeds=per_image_seeds)
    return prompt


def distributed_prompt(seed: int, batch: int, per_image_seeds: bool) -> dict:
    """The same chain with DistributedSeed feeding both samplers' seeds and DistributedCollector before SaveImage."""
    prompt = plain_prompt(seed, batch, per_image_seeds)
    prompt[DIST_SEED] = {"class_type": "DistributedSeed", "inputs": {"seed": seed}}
    prompt[COLLECTOR] = {"class_type": "DistributedCollector",
                         "inputs": {"images": prompt[SAVE]["inputs"]["images"], "load_balance": False}}
    prompt[PRIOR]["inputs"]["seed"] = prompt[DECODER]["inputs"]["seed"] = [DIST_SEED, 0]
    prompt[SAVE]["inputs"]["images"] = [COLLECTOR, 0]
    return prompt


# --- helpers -----------------------------------------------------------------------------------------------------

def pixels(data: bytes):
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")), dict(image.text)


def finished(server, prompt_id: str) -> dict:
    entry = qw.wait_for_history(server.url, prompt_id, timeout=RUN_TIMEOUT)
    assert not qw.execution_errors(entry), f"{qw.execution_errors(entry)}\n{server.logs()[-3000:]}"
    return entry


def images_of(server, entry: dict) -> list:
    return [pixels(qw.fetch_image(server.url, image)) for image in qw.output_images(entry)]


def queue_distributed(master, prompt: dict) -> str:
    status, data = qw.request(master.url, "/distributed/queue",
                              {"prompt": prompt, "enabled_worker_ids": WORKER_IDS, "client_id": uuid.uuid4().hex})
    assert status == 200, data[:1000]
    answer = json.loads(data)
    assert answer["worker_count"] == len(WORKER_IDS), answer
    return answer["prompt_id"]


def worker_entry(worker, job_id: str) -> dict:
    """The worker's /history entry of the distributed job ``job_id`` (its collector's multi_job_id)."""
    history = worker.get("/history")
    entries = [entry for entry in history.values() if entry["prompt"][2].get(COLLECTOR, {}).get("inputs", {})
               .get("multi_job_id") == job_id]
    assert len(entries) == 1, f"{len(entries)} runs of job {job_id} on {worker.url}:\n{worker.logs()[-3000:]}"
    return entries[0]


def single_server_images(servers, seeds: list[int], batch: int, per_image_seeds: bool) -> list:
    """Each seed's images from the plain workflow, run on a server other than the participant that used it."""
    results: list = [None] * len(seeds)

    def run(index: int) -> None:
        server = servers[(index + 1) % len(servers)]
        prompt_id = qw.queue_prompt(server.url, plain_prompt(seeds[index], batch, per_image_seeds))
        results[index] = [array for array, _ in images_of(server, finished(server, prompt_id))]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(seeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is not None for result in results), "a single-server reference run failed (see above)"
    return [array for result in results for array in result]


def assert_all_different(arrays) -> None:
    for i in range(len(arrays)):
        for j in range(i):
            assert not (arrays[i] == arrays[j]).all(), f"collected images {j} and {i} are identical"


# --- the scale-out runs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch,per_image_seeds", [(1, False), (2, True)], ids=["default", "per_image_seeds"])
def test_workers_run_their_share_and_the_master_collects_single_server_images(cluster, batch, per_image_seeds):
    master, workers = cluster
    prompt_id = queue_distributed(master, distributed_prompt(SEED, batch, per_image_seeds))
    entry = finished(master, prompt_id)
    job_id = entry["prompt"][2][COLLECTOR]["inputs"]["multi_job_id"]

    # Every worker ran the job as worker_<k> (DistributedSeed: seed + k + 1) and sent its images back.
    for k, worker in enumerate(workers):
        ran = worker_entry(worker, job_id)
        assert ran["status"]["status_str"] == "success", ran["status"]
        assert ran["prompt"][2][DIST_SEED]["inputs"] == {"seed": SEED, "is_worker": True, "worker_id": f"worker_{k}"}
        assert len(qw.output_images(ran)) == batch

    # The master collected all of them: its own batch first, then the workers' in the order of enabled_worker_ids.
    collected = images_of(master, entry)
    assert len(collected) == batch * (1 + len(workers))
    participant_seeds = [SEED + k for k in range(1 + len(workers))]
    expected = single_server_images([master, *workers], participant_seeds, batch, per_image_seeds)
    for index, ((array, _), reference) in enumerate(zip(collected, expected)):
        assert array.shape == (256, 256, 3) and (array == reference).all(), \
            f"collected image {index} differs from seed {participant_seeds[index // batch]}'s single-server image"
    assert_all_different([array for array, _ in collected])
    # Every collected PNG carries the master's prompt (seed S, not the worker's): re-make a worker's image from its
    # seed, not by loading its PNG.
    assert all(json.loads(text["prompt"])[DIST_SEED]["inputs"]["seed"] == SEED for _, text in collected)


def test_a_worker_image_of_a_per_image_batch_is_remade_alone_on_the_master(cluster):
    """Worker 2's second image, at batch 1 on the master at image_seeds(S + 2, 2)[1]: what the sampler shows."""
    master, workers = cluster
    entry = finished(master, queue_distributed(master, distributed_prompt(SEED + 10, 2, True)))
    collected = [array for array, _ in images_of(master, entry)]
    seed = image_seeds(SEED + 10 + 2, 2)[1]
    alone = single_server_images([master], [seed], 1, False)[0]
    difference = abs(alone.astype(int) - collected[5].astype(int))
    # One generator per image makes the batch and the batch-1 run the same maths; the batched and single matmuls
    # may round differently in the last float bit, which can move a pixel across an 8-bit step.
    assert difference.max() <= 1 and difference.mean() < 1e-3, (difference.max(), difference.mean())


def test_queue_workflow_distributed_option_drives_the_same_run(cluster, tmp_path):
    """scripts/queue_workflow.py --distributed --worker-ids, as a user runs it: the default run's images again."""
    script = ROOT / "scripts" / "queue_workflow.py"
    if "--worker-ids" not in script.read_text(encoding="utf-8"):
        pytest.skip("scripts/queue_workflow.py has no --distributed/--worker-ids options yet")
    master, workers = cluster
    workflow = tmp_path / "distributed_text_to_image.json"
    workflow.write_text(json.dumps(distributed_prompt(SEED, 1, False)), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), str(workflow), "--server", master.url, "--distributed",
                             "--worker-ids", ",".join(WORKER_IDS), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = [Path(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("saved ")]
    collected = [pixels(path.read_bytes()) for path in saved]
    assert len(collected) == 1 + len(workers)
    job_id = json.loads(collected[0][1]["prompt"])[COLLECTOR]["inputs"]["multi_job_id"]
    for worker in workers:
        assert worker_entry(worker, job_id)["status"]["status_str"] == "success"
    expected = single_server_images([master, *workers], [SEED + k for k in range(1 + len(workers))], 1, False)
    assert all((array == reference).all() for (array, _), reference in zip(collected, expected))
