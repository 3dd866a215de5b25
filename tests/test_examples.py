"""The examples under examples/ served by the real binary."""

import signal
import threading

from conftest import EXAMPLES

CONCURRENT_CLIENTS = 200


def test_flask_example_answers_every_route(mercy):
    """The Flask example, with 2 processes of 4 threads, answers each of its
    routes correctly, and /worker names a worker that mercy reported ready."""
    server = mercy("--wsgi-file", EXAMPLES / "flask_app.py",
                   "--processes", "2", "--threads", "4")

    index = server.get("/")
    assert index.status == 200
    assert index.header("Content-Type") == "application/json"
    assert index.json() == {"service": "flask example", "server": "mercy"}

    item = {"name": "apple", "count": 3, "tags": ["red", "fruit"]}
    created = server.post_json("/items", item)
    assert created.status == 201
    assert created.json() == {"item": item}

    malformed = server.request("POST", "/items", body=b'{"name": "apple"',
                               headers={"Content-Type": "application/json"})
    assert malformed.status == 400
    assert malformed.json() == {"error": "body is not valid JSON"}

    not_an_object = server.post_json("/items", ["apple"])
    assert not_an_object.status == 400
    assert "error" in not_an_object.json()

    slow = server.get("/slow?seconds=0.2")
    assert slow.status == 200
    assert slow.json() == {"slept": 0.2}

    workers = server.worker_pids()
    assert len(workers) == 2
    for _ in range(10):
        answer = server.get("/worker").json()
        assert workers[answer["worker_id"]] == answer["pid"]

    assert server.get("/no-such-route").status == 404


def test_flask_example_serves_200_concurrent_clients(mercy):
    """200 clients, each on its own connection and all released at once,
    each get back exactly the item they posted; mercy logs 200 request lines."""
    server = mercy("--wsgi-file", EXAMPLES / "flask_app.py",
                   "--processes", "2", "--threads", "4")
    barrier = threading.Barrier(CONCURRENT_CLIENTS, timeout=60)
    outcomes = [None] * CONCURRENT_CLIENTS

    def client(number):
        item = {"name": f"client-{number}", "number": number}
        try:
            barrier.wait()
            response = server.post_json("/items", item, timeout=60)
            if response.status != 201:
                outcomes[number] = f"status {response.status}: {response.body!r}"
            elif response.json() != {"item": item}:
                outcomes[number] = f"wrong answer {response.body!r}"
            else:
                outcomes[number] = "ok"
        except Exception as error:  # noqa: BLE001 - every failure is reported
            outcomes[number] = f"{type(error).__name__}: {error}"

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CONCURRENT_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    failures = {n: outcome for n, outcome in enumerate(outcomes) if outcome != "ok"}
    assert failures == {}
    requests = server.wait_event("request", count=CONCURRENT_CLIENTS,
                                 method="POST", path="/items")
    assert len(requests) == CONCURRENT_CLIENTS
    assert {int(r["status"]) for r in requests} == {201}


def test_pymongo_example_reloads_and_stops_without_waiting_for_the_driver(mercy):
    """The pymongo example (a MongoClient with monitor threads in every worker,
    no server) reloads and stops gracefully: new pids after the reload, exit
    status 0, and no worker hits its reload mercy or gets killed."""
    server = mercy("--wsgi-file", EXAMPLES / "pymongo_app.py",
                   "--processes", "2", "--threads", "2",
                   "--worker-reload-mercy", "10")

    before = server.get("/")
    assert before.status == 200
    assert before.json()["servers"] == ["127.0.0.1:27017"]
    old_pids = set(server.worker_pids().values())
    assert len(old_pids) == 2

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    new_pids = set(server.worker_pids().values())
    assert len(new_pids) == 2
    assert new_pids.isdisjoint(old_pids)
    for pid in old_pids:
        server.wait_event("retired", worker_pid=pid)

    after = server.get("/")
    assert after.status == 200
    assert after.json()["pid"] in new_pids

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    server.wait_event("shutdown_done")
    server.assert_no_events("mercy_expired", "killed")
