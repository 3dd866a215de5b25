//! Every option of uWSGI 2.0 (its core and the plugins its default build
//! embeds: python, gevent, http, the routers, carbon, cheaper_busyness and
//! the rest), each with how mercy treats it. The names are uWSGI's; the
//! texts are mercy's.

use super::Treatment;

/// uWSGI options that share one treatment.
pub struct Group {
    pub treatment: Treatment,
    pub names: &'static [&'static str],
}

/// The classification: every uWSGI 2.0 option is in exactly one group.
#[rustfmt::skip]
pub const GROUPS: &[Group] = &[
    Group {
        treatment: Treatment::Supported,
        names: &[
            "socket", "uwsgi-socket", "http-socket", "http11-socket", "processes", "workers",
            "harakiri", "harakiri-graceful-timeout", "strict", "set", "set-placeholder", "set-ph",
            "listen", "max-vars", "buffer-size", "chmod-socket", "chmod", "chown-socket",
            "worker-reload-mercy", "help", "max-requests", "max-requests-delta",
            "max-worker-lifetime", "max-worker-lifetime-delta", "socket-timeout",
            "disable-logging", "pidfile", "pidfile2", "ini", "reload-on-rss", "touch-reload",
            "touch-chain-reload", "post-buffering", "manage-script-name", "stats", "stats-server",
            "stats-http", "master-fifo", "logto", "logto2", "chdir", "mount", "threads", "env",
            "enable-proxy-protocol", "version", "wsgi-file", "file", "module", "wsgi", "callable",
            "home", "virtualenv", "venv", "pyhome", "pythonpath", "python-path", "pp", "gevent",
            "gevent-wait-for-hub", "http", "httprouter", "http-enable-proxy-protocol", "uid",
            "gid",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy always runs a master process"),
        names: &[
            "master",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "every worker imports the app itself; nothing is loaded before a fork",
        ),
        names: &[
            "lazy", "lazy-apps",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("Python threads always work in mercy workers"),
        names: &[
            "enable-threads",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("SIGTERM is always a graceful shutdown"),
        names: &[
            "die-on-term",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("a worker has exactly one interpreter"),
        names: &[
            "single-interpreter",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "an app that cannot load always stops the start (exit status 3)",
        ),
        names: &[
            "need-app",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("workers retire on their own when the master is gone"),
        names: &[
            "no-orphans",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "accepting is done by each worker's event loop; no lock is needed",
        ),
        names: &[
            "thunder-lock",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "no Python state is ever forked: workers start a new interpreter",
        ),
        names: &[
            "py-call-osafterfork", "py-call-uwsgi-fork-hooks",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("unix sockets and the pidfile are always removed at exit"),
        names: &[
            "vacuum",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("the stats document has each worker's memory"),
        names: &[
            "memory-report",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "workers write their log lines to the master's standard error already",
        ),
        names: &[
            "log-master",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "gevent mode patches the standard library before the app is imported \
            (--no-gevent-monkey-patch turns it off)",
        ),
        names: &[
            "gevent-monkey-patch", "gevent-early-monkey-patch",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("workers are named `mercy worker N (generation G)`"),
        names: &[
            "auto-procname",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "HTTP/1.1 keep-alive is on; --keep-alive sets the idle time",
        ),
        names: &[
            "http-keepalive",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("HTTP/1.1 responses without a length are sent chunked"),
        names: &[
            "http-auto-chunked",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("chunked request bodies are always read"),
        names: &[
            "http-chunked-input",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "`Expect: 100-continue` is answered when the app reads the body",
        ),
        names: &[
            "http-manage-expect",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "mercy has Python WSGI support built in and loads no plugins",
        ),
        names: &[
            "plugins", "plugin", "need-plugins", "need-plugin", "plugins-dir", "plugin-dir",
            "autoload",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy never dies of SIGPIPE"),
        names: &[
            "ignore-sigpipe",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy does not check descriptor 0"),
        names: &[
            "skip-zero",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy leaves standard input as it was given"),
        names: &[
            "honour-stdin",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("accepted connections always have TCP_NODELAY"),
        names: &[
            "tcp-nodelay",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy does not defer accepts"),
        names: &[
            "no-defer-accept",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("accepted connections are always close-on-exec"),
        names: &[
            "close-on-exec",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("a harakiri always logs the request and its Python stack"),
        names: &[
            "harakiri-verbose",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "mercy has no after-request hooks for a harakiri to cover",
        ),
        names: &[
            "harakiri-no-arh", "no-harakiri-arh", "no-harakiri-after-req-hook",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy serves one app; there is no table of apps to size"),
        names: &[
            "max-apps",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy serves one app; SCRIPT_NAME never selects another"),
        names: &[
            "ignore-script-name",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "mercy passes no descriptors between processes while serving",
        ),
        names: &[
            "no-fd-passing",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy has no regular-expression routing"),
        names: &[
            "pcre-jit",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("the --stats document is always compact JSON"),
        names: &[
            "stats-minified", "stats-min",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("every log line has a timestamp"),
        names: &[
            "logdate", "log-date",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("every request gets a new environ"),
        names: &[
            "wsgi-env-behaviour", "wsgi-env-behavior",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo("mercy follows PEP 3333 in full"),
        names: &[
            "wsgi-strict",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use --uid and --gid (mercy drops to them after binding its sockets, with the \
            user's groups), or start mercy as that user (systemd User=/Group=, a container's \
            USER)",
        ),
        names: &[
            "add-gid", "immediate-uid", "immediate-gid", "no-initgroups",
            "master-as-root", "drop-after-init", "drop-after-apps",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "confine mercy from the service manager or a container (systemd RootDirectory=, \
            PrivateNetwork=, CapabilityBoundingSet=, cgroups)",
        ),
        names: &[
            "chroot", "pivot-root", "pivot_root", "cap", "unshare", "unshare2", "setns-socket",
            "setns-socket-skip", "setns-skip", "setns", "setns-preopen", "jailed", "jail",
            "jail-ip4", "jail-ip6", "jidfile", "jid-file", "jail2", "libjail", "jail-attach",
            "refork", "re-fork", "refork-as-root", "re-fork-as-root", "refork-post-jail",
            "re-fork-post-jail", "forkbomb-delay", "cgroup", "cgroup-opt", "cgroup-dir-mode",
            "namespace", "namespace-keep-mount", "ns", "namespace-net", "ns-net",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "run mercy under a supervisor (systemd, a container) and use --logto for a log file",
        ),
        names: &[
            "daemonize", "daemonize2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "run one mercy per app under systemd or a container orchestrator",
        ),
        names: &[
            "emperor", "emperor-proxy-socket", "emperor-wrapper", "emperor-wrapper-override",
            "emperor-wrapper-fallback", "emperor-nofollow", "emperor-procname", "emperor-freq",
            "emperor-required-heartbeat", "emperor-curse-tolerance", "emperor-pidfile",
            "emperor-tyrant", "emperor-tyrant-nofollow", "emperor-stats", "emperor-stats-server",
            "early-emperor", "emperor-broodlord", "emperor-throttle", "emperor-max-throttle",
            "emperor-magic-exec", "emperor-on-demand-extension", "emperor-on-demand-ext",
            "emperor-on-demand-directory", "emperor-on-demand-dir", "emperor-on-demand-exec",
            "emperor-extra-extension", "emperor-extra-ext", "emperor-no-blacklist",
            "emperor-use-clone", "emperor-graceful-shutdown", "emperor-cap", "vassals-cap",
            "vassal-cap", "imperial-monitor-list", "imperial-monitors-list", "vassals-inherit",
            "vassals-include", "vassals-inherit-before", "vassals-include-before",
            "vassals-start-hook", "vassals-stop-hook", "vassal-sos", "vassal-sos-backlog",
            "vassals-set", "vassal-set", "heartbeat", "hook-emperor-start", "hook-emperor-stop",
            "hook-emperor-reload", "hook-emperor-lost", "hook-as-vassal", "hook-as-emperor",
            "exec-as-vassal", "exec-as-emperor", "mount-as-vassal", "mount-as-emperor",
            "umount-as-vassal", "umount-as-emperor", "call-as-vassal", "call-as-vassal1",
            "call-as-vassal3", "call-as-emperor", "call-as-emperor1", "call-as-emperor2",
            "call-as-emperor4",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy has no clustering or subscriptions: register instances in the front proxy or \
            in service discovery",
        ),
        names: &[
            "weight", "auto-weight", "multicast", "multicast-ttl", "multicast-loop",
            "subscription-notify-socket", "legion", "legion-mcast", "legion-node", "legion-freq",
            "legion-tolerance", "legion-death-on-lord-error", "legion-skew-tolerance",
            "legion-lord", "legion-unlord", "legion-setup", "legion-death", "legion-join",
            "legion-node-joined", "legion-node-left", "legion-quorum", "legion-scroll",
            "legion-scroll-max-size", "legion-scroll-list-max-size", "subscriptions-sign-check",
            "subscriptions-sign-check-tolerance", "subscriptions-sign-skip-uid",
            "subscriptions-credentials-check", "subscriptions-use-credentials",
            "subscription-algo", "subscription-dotsplit", "subscribe-to", "st", "subscribe",
            "subscribe2", "subscribe-freq", "subscription-tolerance",
            "unsubscribe-on-graceful-reload", "start-unsubscribed", "subscribe-with-modifier1",
            "legion-cron", "cron-legion", "unique-legion-cron", "unique-cron-legion",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use a fixed --processes; SIGTTIN and SIGTTOU (or + and - on --master-fifo) add or \
            remove one worker",
        ),
        names: &[
            "cheap", "cheaper", "cheaper-initial", "cheaper-algo", "cheaper-step",
            "cheaper-overload", "cheaper-rss-limit-soft", "cheaper-rss-limit-hard", "idle",
            "die-on-idle", "cheaper-busyness-max", "cheaper-busyness-min",
            "cheaper-busyness-multiplier", "cheaper-busyness-penalty", "cheaper-busyness-verbose",
            "cheaper-busyness-backlog-alert", "cheaper-busyness-backlog-multiplier",
            "cheaper-busyness-backlog-step", "cheaper-busyness-backlog-nonzero",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "serve static files from the front proxy (nginx) or the app (WhiteNoise)",
        ),
        names: &[
            "check-static", "check-static-docroot", "static-check", "static-map", "static-map2",
            "static-skip-ext", "static-index", "static-safe", "static-cache-paths",
            "static-cache-paths-name", "mimefile", "mime-file", "static-expires-type",
            "static-expires-type-mtime", "static-expires", "static-expires-mtime",
            "static-expires-uri", "static-expires-uri-mtime", "static-expires-path-info",
            "static-expires-path-info-mtime", "static-gzip", "static-gzip-all", "static-gzip-dir",
            "static-gzip-prefix", "static-gzip-ext", "static-gzip-suffix", "honour-range",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "answer with an X-Accel-Redirect header from the app and let nginx send the file",
        ),
        names: &[
            "file-serve-mode", "fileserve-mode",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy writes responses from Rust already",
        ),
        names: &[
            "offload-threads", "offload-thread",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use --touch-reload, or send SIGHUP from a file watcher",
        ),
        names: &[
            "fs-reload", "fs-brutal-reload", "py-auto-reload", "py-autoreload",
            "python-auto-reload", "python-autoreload", "py-auto-reload-ignore",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use a task queue (Celery, RQ)"),
        names: &[
            "spooler", "spooler-external", "spooler-ordered", "spooler-chdir",
            "spooler-processes", "spooler-quiet", "spooler-max-tasks", "spooler-harakiri",
            "spooler-frequency", "spooler-freq", "touch-spoolers-reload", "spooler-import",
            "spooler-pyimport", "spooler-py-import", "spooler-python-import",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "run background work in its own process (a task queue or a systemd service)",
        ),
        names: &[
            "mule-harakiri", "mule-reload-mercy", "mule", "mules", "farm", "mule-msg-size",
            "hook-as-mule", "touch-mules-reload",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use systemd timers or cron"),
        names: &[
            "cron", "cron2", "unique-cron", "cron-harakiri",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use Redis or memcached"),
        names: &[
            "cache", "cache-blocksize", "cache-store", "cache-store-sync", "cache-no-expire",
            "cache-expire-freq", "cache-report-freed-items", "cache-udp-server", "cache-udp-node",
            "cache-sync", "cache-use-last-modified", "add-cache-item", "load-file-in-cache",
            "load-file-in-cache-gzip", "cache2", "queue", "queue-blocksize", "queue-store",
            "queue-store-sync", "check-cache",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("do routing in the front proxy or the app"),
        names: &[
            "no-default-app", "worker-mount", "vhost", "vhost-host", "route", "route-host",
            "route-uri", "route-qs", "route-remote-addr", "route-user-agent", "route-remote-user",
            "route-referer", "route-label", "route-if", "route-if-not", "route-run",
            "final-route", "final-route-status", "final-route-host", "final-route-uri",
            "final-route-qs", "final-route-remote-addr", "final-route-user-agent",
            "final-route-remote-user", "final-route-referer", "final-route-label",
            "final-route-if", "final-route-if-not", "final-route-run", "error-route",
            "error-route-status", "error-route-host", "error-route-uri", "error-route-qs",
            "error-route-remote-addr", "error-route-user-agent", "error-route-remote-user",
            "error-route-referer", "error-route-label", "error-route-if", "error-route-if-not",
            "error-route-run", "response-route", "response-route-status", "response-route-host",
            "response-route-uri", "response-route-qs", "response-route-remote-addr",
            "response-route-user-agent", "response-route-remote-user", "response-route-referer",
            "response-route-label", "response-route-if", "response-route-if-not",
            "response-route-run", "router-list", "routers-list",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --gevent N for concurrent requests in one worker"),
        names: &[
            "async", "loop", "ugreen", "ugreen-stacksize",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use --worker-reload-mercy, which bounds every retirement",
        ),
        names: &[
            "reload-mercy",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: a retiring worker always runs its shutdown hooks, within \
            --worker-reload-mercy",
        ),
        names: &[
            "skip-atexit", "skip-atexit-teardown",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --log-json and format the JSON lines downstream"),
        names: &[
            "log-format", "logformat", "logformat-strftime", "log-format-strftime", "log-encoder",
            "log-req-encoder", "log-prefix", "log-micros",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "the request log has every request with its status, size and duration; filter it \
            downstream",
        ),
        names: &[
            "log-zero", "log-slow", "log-4xx", "log-5xx", "log-big", "log-sendfile",
            "log-ioerror",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "send standard error to journald or a log shipper, and route or filter it there",
        ),
        names: &[
            "log-syslog", "log-socket", "req-logger", "logger-req", "logger", "logger-list",
            "loggers-list", "threaded-logger", "log-drain", "log-filter", "log-route",
            "log-req-route", "log-master-bufsize", "log-master-stream", "log-master-req-stream",
            "rsyslog-packet-size", "rsyslog-split-messages",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "rotate the file with logrotate, then write l to --master-fifo (or send SIGUSR1) to \
            reopen it",
        ),
        names: &[
            "touch-logrotate", "touch-logreopen", "logfile-chown", "logfile-chmod", "log-reopen",
            "log-truncate", "log-maxsize", "log-backupname",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "log the client address in the front proxy, or use --enable-proxy-protocol so that \
            mercy sees it",
        ),
        names: &[
            "log-x-forwarded-for", "http-stud-prefix",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "alert on mercy's log or --metrics in the monitoring system",
        ),
        names: &[
            "alarm-metric", "alarm", "alarm-cheap", "alarm-freq", "alarm-fd", "alarm-segfault",
            "segfault-alarm", "alarm-backlog", "backlog-alarm", "lq-alarm", "alarm-lq",
            "alarm-listen-queue", "listen-queue-alarm", "log-alarm", "alarm-log", "not-log-alarm",
            "not-alarm-log", "alarm-list", "alarms-list", "alarm-msg-size",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --metrics ADDR (Prometheus text) or --stats ADDR"),
        names: &[
            "enable-metrics", "metric", "metric-threshold", "metric-alarm", "metrics-dir",
            "metrics-dir-restore", "metric-dir", "metric-dir-restore", "metrics-no-cores", "udp",
            "stats-push", "stats-pusher-default-freq", "stats-pushers-default-freq",
            "stats-no-cores", "stats-no-metrics", "snmp", "snmp-community", "ping",
            "ping-timeout", "nagios", "rrdtool", "rrdtool-freq", "rrdtool-lib", "carbon",
            "carbon-timeout", "carbon-freq", "carbon-id", "carbon-no-workers", "carbon-max-retry",
            "carbon-retry-delay", "carbon-root", "carbon-hostname-dots", "carbon-name-resolve",
            "carbon-resolve-names", "carbon-idle-avg", "carbon-use-metrics",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "terminate TLS in the front proxy and have it pass HTTPS=on",
        ),
        names: &[
            "suwsgi-socket", "ssl-socket", "https-socket", "https-socket-modifier1",
            "https-socket-modifier2", "ssl-verbose", "ssl-verify-depth", "ssl-sessions-timeout",
            "ssl-session-timeout", "sni", "sni-dir", "sni-dir-ciphers", "ssl-enable3",
            "ssl-enable-sslv3", "ssl-enable-tlsv1", "ssl-option", "sni-regexp", "ssl-tmp-dir",
            "https", "https2", "https-export-cert", "https-session-context", "http-to-https",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy has no router processes: route and balance in the front proxy (nginx, \
            HAProxy)",
        ),
        names: &[
            "force-gateway", "hook-as-gateway", "zerg", "zerg-fallback", "zerg-server",
            "fastrouter", "fastrouter-processes", "fastrouter-workers", "fastrouter-zerg",
            "fastrouter-use-cache", "fastrouter-use-pattern", "fastrouter-use-base",
            "fastrouter-fallback", "fastrouter-use-code-string", "fastrouter-use-socket",
            "fastrouter-to", "fastrouter-gracetime", "fastrouter-events", "fastrouter-quiet",
            "fastrouter-cheap", "fastrouter-subscription-server", "fastrouter-subscription-slot",
            "fastrouter-timeout", "fastrouter-post-buffering", "fastrouter-post-buffering-dir",
            "fastrouter-stats", "fastrouter-stats-server", "fastrouter-ss", "fastrouter-harakiri",
            "fastrouter-uid", "fastrouter-gid", "fastrouter-resubscribe",
            "fastrouter-resubscribe-bind", "fastrouter-buffer-size",
            "fastrouter-fallback-on-no-key", "fastrouter-subscription-fallback-key",
            "http-processes", "http-workers", "http-var", "http-to", "http-zerg", "http-fallback",
            "http-modifier1", "http-modifier2", "http-use-cache", "http-use-pattern",
            "http-use-base", "http-events", "http-subscription-server",
            "http-subscription-fallback-key", "http-use-code-string", "http-use-socket",
            "http-gracetime", "http-quiet", "http-cheap", "http-uid", "http-gid",
            "http-resubscribe", "http-server-name-as-http-host", "http-connect-timeout",
            "http-manage-source", "http-manage-rtsp", "zergpool", "zerg-pool", "rawrouter",
            "rawrouter-processes", "rawrouter-workers", "rawrouter-zerg", "rawrouter-use-cache",
            "rawrouter-use-pattern", "rawrouter-use-base", "rawrouter-fallback",
            "rawrouter-use-code-string", "rawrouter-use-socket", "rawrouter-to",
            "rawrouter-gracetime", "rawrouter-events", "rawrouter-max-retries", "rawrouter-quiet",
            "rawrouter-cheap", "rawrouter-subscription-server", "rawrouter-subscription-slot",
            "rawrouter-timeout", "rawrouter-stats", "rawrouter-stats-server", "rawrouter-ss",
            "rawrouter-harakiri", "rawrouter-xclient", "rawrouter-buffer-size", "sslrouter",
            "sslrouter2", "sslrouter-session-context", "sslrouter-processes", "sslrouter-workers",
            "sslrouter-zerg", "sslrouter-use-cache", "sslrouter-use-pattern",
            "sslrouter-use-base", "sslrouter-fallback", "sslrouter-use-code-string",
            "sslrouter-use-socket", "sslrouter-to", "sslrouter-gracetime", "sslrouter-events",
            "sslrouter-max-retries", "sslrouter-quiet", "sslrouter-cheap",
            "sslrouter-subscription-server", "sslrouter-timeout", "sslrouter-stats",
            "sslrouter-stats-server", "sslrouter-ss", "sslrouter-harakiri", "sslrouter-sni",
            "sslrouter-buffer-size",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --socket-timeout"),
        names: &[
            "http-timeout", "http-headers-timeout",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --buffer-size"),
        names: &[
            "http-buffer-size",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --stats"),
        names: &[
            "http-stats", "http-stats-server", "http-ss",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --harakiri"),
        names: &[
            "http-harakiri",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy serves WSGI only: run WebSocket endpoints on an ASGI server behind the same \
            proxy",
        ),
        names: &[
            "websockets-ping-freq", "websocket-ping-freq", "websockets-pong-tolerance",
            "websocket-pong-tolerance", "websockets-max-size", "websocket-max-size",
            "http-raw-body", "http-websockets",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "compress in the front proxy (nginx gzip) or in WSGI middleware",
        ),
        names: &[
            "http-auto-gzip",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "serve the uwsgi protocol (--socket, nginx uwsgi_pass) or HTTP (--http, proxy_pass) \
            instead",
        ),
        names: &[
            "fastcgi-socket", "fastcgi-nph-socket", "scgi-socket", "scgi-nph-socket",
            "raw-socket", "puwsgi-socket", "protocol", "socket-protocol", "shared-socket",
            "undeferred-shared-socket", "cgi-mode", "abstract-socket",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy serves modifier1 0 (WSGI) only: set uwsgi_modifier1 0 in nginx, or leave it \
            out",
        ),
        names: &[
            "http-socket-modifier1", "http-socket-modifier2", "fastcgi-modifier1",
            "fastcgi-modifier2", "scgi-modifier1", "scgi-modifier2", "raw-modifier1",
            "raw-modifier2", "allowed-modifiers", "remap-modifier",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "write the options as an ini file ([uwsgi] section) and pass it with --ini",
        ),
        names: &[
            "xmlconfig", "xml", "config", "yaml", "yml", "json", "js",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy has no config logic: write out the keys it would produce (the lines inside \
            the block are read once, unconditionally)",
        ),
        names: &[
            "for", "for-glob", "for-times", "for-readline", "endfor", "end-for", "if-opt",
            "if-not-opt", "if-env", "if-not-env", "ifenv", "if-reload", "if-not-reload",
            "if-hostname", "if-not-hostname", "if-hostname-match", "if-not-hostname-match",
            "if-exists", "if-not-exists", "ifexists", "if-plugin", "if-not-plugin", "ifplugin",
            "if-file", "if-not-file", "if-dir", "if-not-dir", "ifdir", "if-directory", "endif",
            "end-if", "blacklist", "end-blacklist", "whitelist", "end-whitelist",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("pass each file with its own --ini; later files win"),
        names: &[
            "inherit", "include", "inject-before", "inject-after",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("write the options the custom one stands for"),
        names: &[
            "declare-option", "declare-option2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy's config reader has no such feature: compute the value before starting mercy \
            (an environment variable and $(VAR) in the ini)",
        ),
        names: &[
            "fallback-config", "get", "resolve", "envdir", "early-envdir", "unenv",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "run commands from the service manager (ExecStartPre=, ExecStopPost=) and Python \
            code from the app (at import, @postfork, uwsgi.atexit)",
        ),
        names: &[
            "hook-asap", "hook-pre-jail", "hook-post-jail", "hook-in-jail", "hook-as-root",
            "hook-as-user", "hook-as-user-atexit", "hook-pre-app", "hook-post-app",
            "hook-post-fork", "hook-accepting", "hook-accepting1", "hook-accepting-once",
            "hook-accepting1-once", "hook-master-start", "hook-touch", "after-request-hook",
            "after-request-call", "exec-asap", "exec-pre-jail", "exec-post-jail", "exec-in-jail",
            "exec-as-root", "exec-as-user", "exec-as-user-atexit", "exec-pre-app",
            "exec-post-app", "mount-asap", "mount-pre-jail", "mount-post-jail", "mount-in-jail",
            "mount-as-root", "umount-asap", "umount-pre-jail", "umount-post-jail",
            "umount-in-jail", "umount-as-root", "call-asap", "call-pre-jail", "call-post-jail",
            "call-in-jail", "call-as-root", "call-as-user", "call-as-user-atexit", "call-pre-app",
            "call-post-app", "touch-exec", "touch-signal", "binsh", "file-write", "worker-exec",
            "worker-exec2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "order the start in the service manager (After=, Requires=, ExecStartPre=)",
        ),
        names: &[
            "wait-for-interface", "wait-for-interface-timeout", "wait-interface",
            "wait-interface-timeout", "wait-for-iface", "wait-for-iface-timeout", "wait-iface",
            "wait-iface-timeout", "wait-for-fs", "wait-for-file", "wait-for-dir",
            "wait-for-mountpoint", "wait-for-fs-timeout", "wait-for-socket",
            "wait-for-socket-timeout",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "let the service manager watch the file system (RequiresMountsFor=)",
        ),
        names: &[
            "check-mountpoint", "mountpoint-check", "check-mount", "mount-check",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "run each program as its own service (a systemd unit, a container)",
        ),
        names: &[
            "privileged-binary-patch", "unprivileged-binary-patch", "privileged-binary-patch-arg",
            "unprivileged-binary-patch-arg", "attach-daemon", "attach-control-daemon",
            "smart-attach-daemon", "smart-attach-daemon2", "legion-attach-daemon",
            "legion-smart-attach-daemon", "legion-smart-attach-daemon2", "daemons-honour-stdin",
            "attach-daemon2", "python-worker-override",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "set the limit in the service manager (systemd LimitNOFILE=, MemoryMax=, TasksMax=, \
            Nice=, CPUAffinity=)",
        ),
        names: &[
            "limit-as", "limit-nproc", "ksm", "never-swap", "prio", "cpu-affinity", "max-fd",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use --reload-on-rss (mercy replaces the worker gracefully)",
        ),
        names: &[
            "reload-on-as", "evil-reload-on-as", "evil-reload-on-rss", "mem-collector-freq",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy has no uWSGI signal framework: use a scheduler (systemd timers, APScheduler) \
            or a task queue",
        ),
        names: &[
            "signal", "signal-bufsize", "signals-bufsize", "signal-timer", "timer",
            "signal-rbtimer", "rbtimer", "fs-signal",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy has no RPC subsystem: call other services over HTTP",
        ),
        names: &[
            "rpc-max", "symcall-register-rpc",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "use operating-system locks or shared memory from Python (fcntl.flock, \
            multiprocessing.shared_memory) or Redis",
        ),
        names: &[
            "locks", "lock-engine", "ftok", "persistent-ipcsem", "sharedarea", "py-sharedarea",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "let the service manager keep one instance, or wrap mercy in flock(1)",
        ),
        names: &[
            "flock", "flock-wait", "flock2", "flock-wait2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --pidfile"),
        names: &[
            "safe-pidfile", "safe-pidfile2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use --chdir (the app is loaded after it)"),
        names: &[
            "force-cwd", "chdir2",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy names its processes (an app can call uwsgi.setprocname)",
        ),
        names: &[
            "procname-prefix", "procname-prefix-spaced", "procname-append", "procname",
            "procname-master",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "control a running mercy with signals to the master (SIGHUP reload, SIGTERM graceful \
            stop, SIGINT fast stop) or the --master-fifo letters",
        ),
        names: &[
            "stop", "reload", "pause", "suspend", "resume", "exit-on-reload", "reload-on-fd",
            "brutal-reload-on-fd", "touch-workers-reload",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("use a general tool instead (curl, socat, python -c)"),
        names: &[
            "connect-and-read", "extract", "print", "iprint", "exit", "test", "pyshell",
            "pyshell-oneshot", "python", "py", "pyrun",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "this is a uWSGI build or listing command: `mercy --help` and docs/uwsgi-options.md \
            list what mercy has",
        ),
        names: &[
            "usage", "print-sym", "print-symbol", "cheaper-algo-list", "cheaper-algos-list",
            "cheaper-list", "clock-list", "clocks-list", "loop-list", "loops-list",
            "plugins-list", "plugin-list", "dump-options", "show-config", "binary-append-data",
            "cflags", "dot-h", "config-py", "build-plugin", "python-version",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "build the app in a Python module (paste.deploy.loadapp, pecan's make_app) and give \
            it with --module",
        ),
        names: &[
            "dlopen", "eval", "pecan", "paste", "paste-logger", "web3", "pump", "wsgi-lite",
            "ini-paste", "ini-paste-logged", "python-raw", "symcall", "symcall-use-next",
            "symcall-post-fork",
        ],
    },
    Group {
        treatment: Treatment::Unsupported("import the module from the app's own code"),
        names: &[
            "pymodule-alias", "post-pymodule-alias", "import", "pyimport", "py-import",
            "python-import", "shared-import", "shared-pyimport", "shared-py-import",
            "shared-python-import",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "set it in the app at import time (sys.argv, sys.executable), or PYTHONOPTIMIZE / \
            PYTHONNOUSERSITE in mercy's environment",
        ),
        names: &[
            "py-programname", "py-program-name", "pyargv", "optimize", "reload-os-env", "no-site",
            "py-executable", "py-sys-executable",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "a harakiri logs the stuck request's Python stack; py-spy dump shows any worker's",
        ),
        names: &[
            "py-tracebacker",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: return bytes from the app and let mercy send the headers with \
            the first body bytes",
        ),
        names: &[
            "disable-sendfile", "start_response-nodelay", "wsgi-accept-buffer",
            "wsgi-accept-buffers", "wsgi-disable-file-wrapper",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "an app exception gives a 500 and a traceback in the log, and the worker keeps \
            serving; handle exceptions in the framework or middleware",
        ),
        names: &[
            "catch-exceptions", "reload-on-exception", "reload-on-exception-type",
            "reload-on-exception-value", "reload-on-exception-repr", "exception-handler",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "serve error pages from the front proxy (nginx error_page) or the app",
        ),
        names: &[
            "error-page-403", "error-page-404", "error-page-500",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "set or remove response headers in the front proxy or in WSGI middleware",
        ),
        names: &[
            "add-header", "rem-header", "del-header", "collect-header", "response-header-collect",
            "pull-header", "response-headers-limit",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "limit request bodies in the front proxy (nginx client_max_body_size)",
        ),
        names: &[
            "limit-post", "post-buffering-bufsize", "body-read-warning", "upload-progress",
            "chunked-input-limit", "chunked-input-timeout",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy does not tune this socket option: set the kernel default (sysctl net.core.*, \
            net.ipv4.*) or remove it",
        ),
        names: &[
            "freebind", "map-socket", "so-keepalive", "so-send-timeout",
            "socket-send-timeout", "so-write-timeout", "socket-write-timeout", "socket-sndbuf",
            "socket-rcvbuf", "shutdown-sockets", "close-on-exec2", "reuse-port", "tcp-fast-open",
            "tcp-fastopen", "tcp-fast-open-client", "tcp-fastopen-client",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy reports readiness to systemd through NOTIFY_SOCKET \
            (Type=notify) by itself",
        ),
        names: &[
            "notify-socket",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: workers inherit only their sockets and the standard streams; \
            have the app open what it needs",
        ),
        names: &[
            "safe-fd", "fd-safe",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy's threads use the default stack size and a retiring worker \
            waits for them within --worker-reload-mercy",
        ),
        names: &[
            "no-threads-wait", "thread-stacksize", "threads-stacksize", "thread-stack-size",
            "threads-stack-size",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy replaces a worker as soon as one of its limits is reached",
        ),
        names: &[
            "harakiri-graceful-signal", "harakiri-queue-threshold",
            "ignore-write-errors", "write-errors-tolerance", "write-errors-exception-only",
            "disable-write-exception", "no-server", "command-mode", "propagate-touch",
            "check-interval", "clock",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "the master always reaps its workers as they exit; no zombie is left",
        ),
        names: &[
            "reaper",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "mercy starts its workers from /proc/self/exe, so it never needs its own path",
        ),
        names: &[
            "binary-path",
        ],
    },
    Group {
        treatment: Treatment::AlreadySo(
            "a free-form mode only uWSGI plugins read; mercy has none, so it changes nothing",
        ),
        names: &[
            "mode",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "profile the app from outside (py-spy) or inside it (cProfile); mercy has no built-in \
            profiler",
        ),
        names: &[
            "profiler",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy prints no C backtrace; a harakiri logs the stuck request's \
            whole Python stack",
        ),
        names: &[
            "backtrace-depth",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: a crashing worker dies of its own signal, so the kernel writes a \
            core dump when ulimit -c (systemd LimitCORE=) allows it",
        ),
        names: &[
            "use-abort",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "remove the option: mercy retires a worker only once its replacement is ready, and \
            waits longer before respawning a worker that keeps dying young",
        ),
        names: &[
            "min-worker-lifetime",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "set the umask of what starts mercy (systemd UMask=, umask in the shell); use \
            --chmod-socket for the sockets' permissions",
        ),
        names: &[
            "umask",
        ],
    },
    Group {
        treatment: Treatment::Unsupported(
            "mercy does not serve TLS: terminate it in the front proxy, which keeps its own TLS \
            session cache",
        ),
        names: &[
            "ssl-sessions-use-cache", "ssl-session-use-cache",
        ],
    },
];

/// uWSGI options that take no value after them on a command line: flags,
/// and options whose value can only be given inline (`--chmod-socket=660`).
#[rustfmt::skip]
pub const WITHOUT_VALUE: &[&str] = &[
    "thunder-lock", "harakiri-verbose", "harakiri-no-arh", "no-harakiri-arh",
    "no-harakiri-after-req-hook", "strict", "skip-zero", "skip-atexit", "skip-atexit-teardown",
    "endfor", "end-for", "if-reload", "if-not-reload", "endif", "end-if", "end-blacklist",
    "end-whitelist", "ignore-sigpipe", "ignore-write-errors", "write-errors-exception-only",
    "disable-write-exception", "memory-report", "cgi-mode", "abstract-socket", "chmod-socket",
    "chmod", "freebind", "enable-threads", "no-threads-wait", "auto-procname",
    "single-interpreter", "need-app", "master", "honour-stdin", "emperor-nofollow",
    "emperor-tyrant", "emperor-tyrant-nofollow", "early-emperor", "emperor-magic-exec",
    "emperor-no-blacklist", "emperor-graceful-shutdown", "imperial-monitor-list",
    "imperial-monitors-list", "exit-on-reload", "die-on-term", "force-gateway", "help", "usage",
    "reaper", "no-fd-passing", "persistent-ipcsem", "cache-no-expire", "cache-report-freed-items",
    "cache-use-last-modified", "spooler-ordered", "spooler-quiet", "mule", "mule-msg-size",
    "disable-logging", "no-initgroups", "setns-preopen", "jailed", "refork", "re-fork",
    "refork-as-root", "re-fork-as-root", "refork-post-jail", "re-fork-post-jail", "no-server",
    "command-mode", "no-defer-accept", "tcp-nodelay", "so-keepalive", "so-send-timeout",
    "socket-send-timeout", "so-write-timeout", "socket-write-timeout", "shutdown-sockets", "ksm",
    "pcre-jit", "never-swap", "propagate-touch", "no-orphans", "no-default-app",
    "manage-script-name", "ignore-script-name", "catch-exceptions", "reload-on-exception",
    "enable-metrics", "metrics-dir-restore", "metric-dir-restore", "metrics-no-cores",
    "stats-http", "stats-minified", "stats-min", "stats-no-cores", "stats-no-metrics",
    "subscriptions-use-credentials", "subscription-dotsplit", "unsubscribe-on-graceful-reload",
    "start-unsubscribed", "snmp", "ssl-verbose", "ssl-verify-depth", "ssl-sessions-use-cache",
    "ssl-session-use-cache", "ssl-enable3", "ssl-enable-sslv3", "ssl-enable-tlsv1", "ssl-option",
    "logformat-strftime", "log-format-strftime", "logfile-chown", "log-syslog", "logger-list",
    "loggers-list", "threaded-logger", "use-abort", "alarm-list", "alarms-list", "log-master",
    "log-master-stream", "log-master-req-stream", "log-reopen", "log-truncate", "logdate",
    "log-date", "log-prefix", "log-zero", "log-4xx", "log-5xx", "log-micros",
    "log-x-forwarded-for", "master-as-root", "drop-after-init", "drop-after-apps", "lazy",
    "lazy-apps", "cheap", "cheaper-algo-list", "cheaper-algos-list", "cheaper-list",
    "die-on-idle", "vhost", "vhost-host", "router-list", "routers-list", "clock-list",
    "clocks-list", "check-static-docroot", "static-gzip-all", "honour-range", "disable-sendfile",
    "check-cache", "close-on-exec", "close-on-exec2", "vacuum", "enable-proxy-protocol",
    "reuse-port", "tcp-fast-open-client", "tcp-fastopen-client", "zerg-fallback", "loop-list",
    "loops-list", "daemons-honour-stdin", "plugins-list", "plugin-list", "autoload",
    "dump-options", "show-config", "exit", "cflags", "dot-h", "config-py", "version",
    "paste-logger", "reload-os-env", "no-site", "pyshell", "pyshell-oneshot",
    "start_response-nodelay", "wsgi-strict", "wsgi-accept-buffer", "wsgi-accept-buffers",
    "wsgi-disable-file-wrapper", "python-version", "py-call-osafterfork",
    "py-call-uwsgi-fork-hooks", "gevent-monkey-patch", "gevent-early-monkey-patch",
    "gevent-wait-for-hub", "nagios", "carbon-no-workers", "carbon-name-resolve",
    "carbon-resolve-names", "carbon-use-metrics", "fastrouter-use-cache", "fastrouter-use-socket",
    "fastrouter-cheap", "fastrouter-fallback-on-no-key", "https-export-cert", "http-use-cache",
    "http-manage-expect", "http-keepalive", "http-auto-chunked", "http-auto-gzip",
    "http-raw-body", "http-websockets", "http-chunked-input", "http-use-socket", "http-cheap",
    "http-manage-source", "http-manage-rtsp", "http-enable-proxy-protocol", "ugreen",
    "rsyslog-split-messages", "rawrouter-use-cache", "rawrouter-use-socket", "rawrouter-cheap",
    "rawrouter-xclient", "sslrouter-use-cache", "sslrouter-use-socket", "sslrouter-cheap",
    "sslrouter-sni", "cheaper-busyness-verbose", "symcall-use-next",
];

/// uWSGI's one-letter options and the long names they stand for.
pub const SHORT_OPTIONS: &[(char, &str)] = &[
    ('A', "sharedarea"),
    ('C', "chmod-socket"),
    ('H', "home"),
    ('J', "test"),
    ('L', "disable-logging"),
    ('M', "master"),
    ('O', "optimize"),
    ('Q', "spooler"),
    ('R', "max-requests"),
    ('S', "set"),
    ('T', "enable-threads"),
    ('a', "abstract-socket"),
    ('b', "buffer-size"),
    ('c', "cgi-mode"),
    ('d', "daemonize"),
    ('h', "help"),
    ('i', "single-interpreter"),
    ('j', "json"),
    ('l', "listen"),
    ('m', "memory-report"),
    ('p', "processes"),
    ('r', "reaper"),
    ('s', "socket"),
    ('t', "harakiri"),
    ('v', "max-vars"),
    ('w', "module"),
    ('x', "xml"),
    ('y', "yaml"),
    ('z', "socket-timeout"),
];
