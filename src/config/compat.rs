//! How mercy treats uWSGI's options that it has no option of its own for:
//! accepted because mercy already behaves that way, or not supported, with
//! what to do instead. `mercy --options-table` prints this as Markdown
//! (docs/uwsgi-options.md is generated from it and checked in CI).

/// What mercy does with a uWSGI option it has no option of its own for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Accepted with no effect; the text says why nothing is lost.
    AlreadySo(&'static str),
    /// Named at start with what to do instead; an error under `--strict`.
    Unsupported(&'static str),
}

/// uWSGI options with their treatment, by name (without `--`).
pub const UWSGI_OPTIONS: &[(&str, Treatment)] = &[
    (
        "master",
        Treatment::AlreadySo("mercy always runs a master process"),
    ),
    (
        "lazy-apps",
        Treatment::AlreadySo(
            "every worker imports the app itself; nothing is loaded before a fork",
        ),
    ),
    (
        "lazy",
        Treatment::AlreadySo("every worker imports the app itself"),
    ),
    (
        "enable-threads",
        Treatment::AlreadySo("Python threads always work in mercy workers"),
    ),
    (
        "die-on-term",
        Treatment::AlreadySo("SIGTERM is always a graceful shutdown"),
    ),
    (
        "single-interpreter",
        Treatment::AlreadySo("a worker has exactly one interpreter"),
    ),
    (
        "need-app",
        Treatment::AlreadySo("an app that cannot load always stops the start (exit status 3)"),
    ),
    (
        "no-orphans",
        Treatment::AlreadySo("workers retire on their own when the master is gone"),
    ),
    (
        "thunder-lock",
        Treatment::AlreadySo("accepting is done by each worker's event loop; no lock is needed"),
    ),
    (
        "py-call-osafterfork",
        Treatment::AlreadySo("no Python state is ever forked"),
    ),
    (
        "vacuum",
        Treatment::AlreadySo("unix sockets are removed at exit"),
    ),
    ("strict", Treatment::AlreadySo("read by mercy itself")),
    (
        "memory-report",
        Treatment::AlreadySo("the request log and stats carry the figures"),
    ),
    (
        "log-master",
        Treatment::AlreadySo("workers log through the master's standard error already"),
    ),
    (
        "gevent-early-monkey-patch",
        Treatment::AlreadySo("mercy patches before anything else is imported"),
    ),
    (
        "auto-procname",
        Treatment::AlreadySo("workers are named `mercy worker N (generation G)`"),
    ),
    (
        "http-keepalive",
        Treatment::AlreadySo("keep-alive is on; set the idle time with --keep-alive"),
    ),
    (
        "so-keepalive",
        Treatment::AlreadySo("no effect on loopback or behind a proxy"),
    ),
    (
        "plugins",
        Treatment::AlreadySo("mercy has the Python WSGI support built in"),
    ),
    (
        "plugin",
        Treatment::AlreadySo("mercy has the Python WSGI support built in"),
    ),
    (
        "uid",
        Treatment::Unsupported(
            "start mercy as the user it should run as (systemd User=, a container USER)",
        ),
    ),
    (
        "gid",
        Treatment::Unsupported("start mercy as the group it should run as (systemd Group=)"),
    ),
    (
        "daemonize",
        Treatment::Unsupported(
            "run mercy under a supervisor (systemd, a container) and use --logto for a log file",
        ),
    ),
    (
        "emperor",
        Treatment::Unsupported("run one mercy per app under systemd or a container orchestrator"),
    ),
    (
        "cheaper",
        Treatment::Unsupported("use a fixed --processes; SIGTTIN/SIGTTOU change it by one"),
    ),
    (
        "cheaper-algo",
        Treatment::Unsupported("use a fixed --processes"),
    ),
    (
        "static-map",
        Treatment::Unsupported(
            "serve static files from the front proxy (nginx) or the app (WhiteNoise)",
        ),
    ),
    (
        "static-map2",
        Treatment::Unsupported(
            "serve static files from the front proxy (nginx) or the app (WhiteNoise)",
        ),
    ),
    (
        "check-static",
        Treatment::Unsupported(
            "serve static files from the front proxy (nginx) or the app (WhiteNoise)",
        ),
    ),
    (
        "offload-threads",
        Treatment::Unsupported("mercy writes responses from Rust already; remove the option"),
    ),
    (
        "py-autoreload",
        Treatment::Unsupported("use --touch-reload or send SIGHUP from a file watcher"),
    ),
    (
        "spooler",
        Treatment::Unsupported("use a task queue (Celery, RQ)"),
    ),
    (
        "mule",
        Treatment::Unsupported(
            "run background work in its own process (a task queue or a systemd service)",
        ),
    ),
    ("cron", Treatment::Unsupported("use systemd timers or cron")),
    ("cache2", Treatment::Unsupported("use Redis or memcached")),
    (
        "route",
        Treatment::Unsupported("do routing in the front proxy or the app"),
    ),
    (
        "harakiri-verbose",
        Treatment::Unsupported("a harakiri always logs the request and its Python stack"),
    ),
    (
        "reload-mercy",
        Treatment::Unsupported("use --worker-reload-mercy, which bounds every retirement"),
    ),
    (
        "skip-atexit",
        Treatment::Unsupported(
            "a retiring worker always runs its shutdown hooks within --worker-reload-mercy",
        ),
    ),
    (
        "async",
        Treatment::Unsupported("use --gevent N for concurrent requests in one worker"),
    ),
    ("ugreen", Treatment::Unsupported("use --gevent N")),
    ("pidfile2", Treatment::Unsupported("use --pidfile")),
    (
        "logformat",
        Treatment::Unsupported("use --log-json and format the JSON lines downstream"),
    ),
    (
        "log-format",
        Treatment::Unsupported("use --log-json and format the JSON lines downstream"),
    ),
    (
        "log-4xx",
        Treatment::Unsupported("the request log has every status; filter it downstream"),
    ),
    (
        "log-5xx",
        Treatment::Unsupported("the request log has every status; filter it downstream"),
    ),
    (
        "max-fd",
        Treatment::Unsupported("raise the limit in the service manager (LimitNOFILE=)"),
    ),
    (
        "limit-as",
        Treatment::Unsupported("set a memory limit in the service manager (MemoryMax=)"),
    ),
    (
        "procname-prefix",
        Treatment::Unsupported("remove the option: workers are named by mercy"),
    ),
    (
        "procname",
        Treatment::Unsupported("remove the option: workers are named by mercy"),
    ),
];

/// The treatment of a uWSGI option mercy has no option for, if it knows it.
pub fn treatment(name: &str) -> Option<Treatment> {
    UWSGI_OPTIONS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, treatment)| *treatment)
}

/// The classification as a Markdown document: mercy's own options, the
/// uWSGI options accepted with no effect, and those not supported.
pub fn markdown_table(own: &[(String, String)]) -> String {
    let mut out = String::from(
        "# uWSGI options in mercy\n\n\
         Generated by `mercy --options-table`; CI checks it is current.\n\n\
         ## Supported\n\n| option | meaning |\n|---|---|\n",
    );
    for (name, help) in own {
        out.push_str(&format!("| `{name}` | {help} |\n"));
    }
    out.push_str("\n## Accepted, no effect needed\n\n| option | why |\n|---|---|\n");
    for (name, treatment) in UWSGI_OPTIONS {
        if let Treatment::AlreadySo(why) = treatment {
            out.push_str(&format!("| `{name}` | {why} |\n"));
        }
    }
    out.push_str(
        "\n## Not supported\n\nNamed at start with what to do instead; an error \
         under `--strict`.\n\n| option | instead |\n|---|---|\n",
    );
    for (name, treatment) in UWSGI_OPTIONS {
        if let Treatment::Unsupported(instead) = treatment {
            out.push_str(&format!("| `{name}` | {instead} |\n"));
        }
    }
    out.push_str(
        "\nAny other key in an ini file defines a placeholder, as in uWSGI \
         (an error under `--strict`).\n",
    );
    out
}
