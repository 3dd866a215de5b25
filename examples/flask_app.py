"""A small Flask service to try mercy with.

    mercy --http 127.0.0.1:8000 --wsgi-file examples/flask_app.py \\
        --processes 2 --threads 4 --virtualenv .venv

Routes:
    GET  /                  a JSON greeting
    POST /items             takes a JSON object with a string "name";
                            answers 201 with it, 400 on anything else
    GET  /slow?seconds=N    sleeps N seconds (at most 60), then answers
    GET  /worker            which mercy worker (id and pid) answered
"""

import os
import time

from flask import Flask, jsonify, request

try:
    import mercy  # present inside mercy's workers only
except ImportError:
    mercy = None

MAX_SLEEP_SECONDS = 60.0

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(service="flask example", server="mercy")


@app.post("/items")
def create_item():
    # force: a body sent without a JSON Content-Type is parsed all the same.
    item = request.get_json(force=True, silent=True)
    if item is None:
        return jsonify(error="body is not valid JSON"), 400
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return jsonify(error='expected a JSON object with a string "name"'), 400
    return jsonify(item=item), 201


@app.get("/slow")
def slow():
    try:
        seconds = float(request.args.get("seconds", "1"))
    except ValueError:
        return jsonify(error="seconds must be a number"), 400
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        return jsonify(error=f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}"), 400
    time.sleep(seconds)
    return jsonify(slept=seconds)


@app.get("/worker")
def worker():
    worker_id = mercy.worker_id() if mercy is not None else None
    return jsonify(worker_id=worker_id, pid=os.getpid())


# mercy and uWSGI look for "application" by default.
application = app
