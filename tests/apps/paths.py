"""Reports where this worker's Python looks for modules, for the
virtualenv and --pythonpath tests (no dependencies).

Routes:
    /paths            JSON: sys.path, sys.prefix, sys.base_prefix,
                      sys.executable, and whether the user site folder is
                      enabled (site.ENABLE_USER_SITE)
    /import?name=M    imports module M; JSON: {"file": M.__file__} or
                      {"error": "ModuleNotFoundError: ..."}
"""

import importlib
import json
import site
import sys
from urllib.parse import parse_qs


def _json(start_response, document):
    body = json.dumps(document).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _import(name):
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"file": module.__file__}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/paths":
        return _json(start_response, {
            "path": sys.path,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "executable": sys.executable,
            "user_site_enabled": bool(site.ENABLE_USER_SITE),
        })
    if path == "/import":
        return _json(start_response, _import(query["name"][0]))
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
