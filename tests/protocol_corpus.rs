//! Runs the shared HTTP/1.x request corpus through mercy's sans-IO parsers.
//!
//! Each case's bytes go through a small connection driver (PROXY header when
//! the case enables it, then heads, Content-Length and chunked bodies,
//! pipelined requests) fed whole, byte by byte and in seeded random pieces.
//! The corpus README explains the format and where mercy's policy differs;
//! every difference and every corpus setting mercy lacks is written below with
//! its reason, and no case is skipped.
//!
//! Only `serde_json` is used from outside (a dependency of mercy itself), so
//! base64 and the random piece sizes are done here in a few lines.

use std::collections::BTreeSet;

use mercy::protocol::{
    parse_head, parse_proxy, percent_decode, proxy_header_present, BodyFraming, Chunk,
    ChunkedDecoder, HeadParser, Limits, RequestHead,
};
use serde_json::Value;

/// Where the corpus lies below the folder that holds the checkout (or a
/// folder above it, for a worktree nested deeper).
const CORPUS: &str = "shared/corpus/http/requests.json";
const CASE_COUNT: usize = 109;
const RANDOM_SEEDS: u64 = 8;
/// Longest input fed byte by byte to the stateless `parse_head` (see `run_all_modes`).
const STATELESS_BYTE_BY_BYTE_MAX: usize = 9 * 1024;

/// What mercy must do with a case when it is not what the corpus lists.
#[derive(Debug, Clone, Copy)]
enum Difference {
    /// Refuse the head with this status.
    Refuse(u16),
    /// Accept the one request written in [`chunked_07_request`].
    AcceptChunked07,
    /// Accept the corpus request, with this PATH_INFO.
    Path(&'static str),
}

/// Cases where mercy's expected result differs from the corpus, and why.
const DIFFERENCES: &[(&str, Difference, &str)] = &[
    (
        "valid/009",
        Difference::Refuse(400),
        "Content-Length together with Transfer-Encoding is ambiguous framing (DESIGN 6)",
    ),
    (
        "valid/025",
        Difference::Refuse(501),
        "gzip transfer coding is not supported; only a single chunked is",
    ),
    (
        "valid/025_line",
        Difference::Refuse(501),
        "gzip transfer coding is not supported; only a single chunked is",
    ),
    (
        "valid/rfc9112_smuggle_gzip_chunked_01",
        Difference::Refuse(501),
        "gzip transfer coding is not supported; only a single chunked is",
    ),
    (
        "valid/029",
        Difference::Refuse(501),
        "identity is not a transfer coding since RFC 7230",
    ),
    (
        "valid/rfc9112_smuggle_te_identity_chunked_01",
        Difference::Refuse(501),
        "identity is not a transfer coding since RFC 7230",
    ),
    (
        "valid/rfc9112_target_authority_connect_01",
        Difference::Refuse(501),
        "CONNECT has no meaning for a WSGI app",
    ),
    (
        "valid/rfc9112_target_authority_ipv6_01",
        Difference::Refuse(501),
        "CONNECT has no meaning for a WSGI app",
    ),
    (
        "valid/compat_obs_fold",
        Difference::Refuse(400),
        "config permit_obsolete_folding: mercy has no such switch and refuses obs-fold",
    ),
    (
        "valid/compat_obs_fold_huge",
        Difference::Refuse(400),
        "config permit_obsolete_folding: mercy has no such switch and refuses obs-fold",
    ),
    (
        "valid/031compat",
        Difference::Refuse(400),
        "config permit_unconventional_http_method and casefold_http_method: mercy has no \
         such switches; a method with lower-case letters is refused (apps compare \
         REQUEST_METHOD with upper-case names, so `get` would slip past their checks)",
    ),
    (
        "valid/031compat2",
        Difference::Refuse(400),
        "config permit_unconventional_http_method: mercy has no such switch; a method \
         with lower-case letters is refused",
    ),
    (
        "invalid/013",
        Difference::Refuse(400),
        "config permit_obsolete_folding has no mercy equivalent (limit_request_field_size \
         14 is set): the folded line is refused as obs-fold, 400, before it could break \
         the field size limit the corpus expects (431)",
    ),
    (
        "invalid/chunked_07",
        Difference::AcceptChunked07,
        "config header_map=refuse has no mercy equivalent: mercy drops header names with \
         `_` (DESIGN 6), so Transfer_Encoding never counts and the chunked body is read",
    ),
    (
        "valid/100",
        Difference::Path("///keeping_slashes"),
        "the corpus conversion split the raw target with a URL splitter that reads `//` as \
         an authority; an origin-form target is an absolute path (RFC 9112 section 3.2.1), \
         so PATH_INFO keeps the slashes, as the case's name says",
    ),
    (
        "invalid/version_02",
        Difference::Refuse(505),
        "HTTP/2.0 is a well-formed version that mercy does not speak: 505, where the \
         corpus kind InvalidHTTPVersion would map to 400",
    ),
];

/// Cases run with a corpus setting mercy maps differently or lacks, where
/// the expected result stays the corpus's.
const SETTING_NOTES: &[(&str, &str)] = &[
    (
        "valid/024",
        "limit_request_line 8200 and limit_request_field_size 8210 are set; --buffer-size \
         (max_head_bytes, which gunicorn lacks) is raised to 64 KiB, as an operator raising \
         those limits must, or the 16 KiB head could never fit",
    ),
    (
        "valid/040_compat",
        "config header_map=dangerous has no mercy equivalent: names with `_` are dropped as \
         in valid/040, so the expected headers are the corpus's without them",
    ),
    (
        "invalid/limit_header_default_01",
        "limit_request_field_size 0: mercy reads 0 as no limit of its own per line; the 8 KiB \
         head still breaks --buffer-size 4096, so the answer is 431 as expected",
    ),
];

/// Cases whose bytes end before the body their head announces.
const TRUNCATED_BODIES: &[(&str, &str)] = &[(
    "valid/099",
    "Content-Length is 17914 but only 8599 body bytes were captured; the corpus expects the \
     app to see those bytes, so the bytes before the end of input are compared (what \
     wsgi.input does at a short body is the WSGI layer's concern, not framing)",
)];

/// Corpus settings that have a mercy equivalent.
const MERCY_SETTINGS: &[&str] = &[
    "limit_request_line",
    "limit_request_field_size",
    "proxy_protocol",
];

/// One request as the app would receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: String,
    /// Percent-decoded, as PATH_INFO.
    path: Vec<u8>,
    query: Vec<u8>,
    minor_version: u8,
    /// Upper-cased names, wire order.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

/// How a simulated connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// The input ended between requests.
    Clean,
    /// A request without keep-alive was served; the connection closes.
    Closed,
    /// A head (or PROXY header) was refused with this status.
    Refused(u16),
    /// A chunked body was refused while the app read it.
    BodyRefused,
    /// The input ended inside a head.
    IncompleteHead,
    /// The input ended inside a Content-Length body.
    TruncatedBody,
}

/// What the corpus case, read with mercy's policy, must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Accept(Vec<Received>),
    Refuse(u16),
    RefuseBody,
    Incomplete,
}

#[derive(Debug)]
struct Case {
    name: String,
    raw: Vec<u8>,
    limits: Limits,
    proxy: bool,
    expected: Expected,
}

#[test]
fn corpus_cases_match_mercy_policy() {
    let cases = load_cases();
    assert_eq!(
        cases.len(),
        CASE_COUNT,
        "the corpus should hold {CASE_COUNT} cases"
    );
    check_tables_name_real_cases(&cases);

    let mut failures = Vec::new();
    for case in &cases {
        for (mode, result) in run_all_modes(case) {
            if let Err(problem) = result {
                failures.push(format!("{} ({mode}): {problem}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every table entry names a corpus case (settings are checked in `load_case`).
fn check_tables_name_real_cases(cases: &[Case]) {
    let names: BTreeSet<&str> = cases.iter().map(|case| case.name.as_str()).collect();
    let listed = DIFFERENCES
        .iter()
        .map(|(name, _, _)| *name)
        .chain(SETTING_NOTES.iter().map(|(name, _)| *name))
        .chain(TRUNCATED_BODIES.iter().map(|(name, _)| *name));
    for name in listed {
        assert!(
            names.contains(name),
            "table entry {name} is not in the corpus"
        );
    }
}

/// Runs one case in every feeding mode; each entry is the mode's name and verdict.
fn run_all_modes(case: &Case) -> Vec<(String, Result<(), String>)> {
    let whole = [case.raw.len().max(1)];
    let mut runs = vec![
        ("whole, parse_head".to_string(), drive(case, &whole, false)),
        (
            "byte by byte, HeadParser".to_string(),
            drive(case, &[1], true),
        ),
    ];

    // parse_head rescans the whole buffer on every call by design (HeadParser
    // is the incremental path), so byte by byte it is quadratic: for the one
    // 16 KiB case (valid/024) that is seconds in a debug build. Such inputs
    // get 64-byte pieces here; HeadParser above still takes them byte by byte.
    let stateless_piece = if case.raw.len() <= STATELESS_BYTE_BY_BYTE_MAX {
        1
    } else {
        64
    };
    runs.push((
        format!("pieces of {stateless_piece}, parse_head"),
        drive(case, &[stateless_piece], false),
    ));
    for seed in 1..=RANDOM_SEEDS {
        let pieces = random_pieces(case.raw.len(), seed);
        runs.push((
            format!("random pieces seed {seed}"),
            drive(case, &pieces, true),
        ));
    }

    runs.into_iter()
        .map(|(mode, (received, ending))| (mode, judge(case, &received, &ending)))
        .collect()
}

/// Compares what the driver produced with what the case expects.
fn judge(case: &Case, received: &[Received], ending: &Ending) -> Result<(), String> {
    let truncated = TRUNCATED_BODIES.iter().any(|(name, _)| *name == case.name);
    let ok = match &case.expected {
        Expected::Accept(requests) => {
            let ended_well = matches!(ending, Ending::Clean | Ending::Closed)
                || (truncated && *ending == Ending::TruncatedBody);
            ended_well && received == requests.as_slice()
        }
        Expected::Refuse(status) => received.is_empty() && *ending == Ending::Refused(*status),
        // The app was called with the head; its read of the body fails.
        Expected::RefuseBody => received.is_empty() && *ending == Ending::BodyRefused,
        Expected::Incomplete => received.is_empty() && *ending == Ending::IncompleteHead,
    };
    if ok {
        return Ok(());
    }
    Err(format!(
        "expected {}\n    got {} ending {ending:?}",
        summary(&case.expected),
        summarize_requests(received)
    ))
}

/// A short description of an expectation, for failure messages.
fn summary(expected: &Expected) -> String {
    match expected {
        Expected::Accept(requests) => format!("accept {}", summarize_requests(requests)),
        other => format!("{other:?}"),
    }
}

fn summarize_requests(requests: &[Received]) -> String {
    let described: Vec<String> = requests
        .iter()
        .map(|request| {
            let headers: Vec<String> = request
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value);
                    let short: String = value.chars().take(24).collect();
                    format!("{}={short}", String::from_utf8_lossy(name))
                })
                .collect();
            format!(
                "{} {} ?{} HTTP/1.{} [{}] body {} bytes",
                request.method,
                String::from_utf8_lossy(&request.path),
                String::from_utf8_lossy(&request.query),
                request.minor_version,
                headers.join(", "),
                request.body.len()
            )
        })
        .collect();
    format!("[{}]", described.join("; "))
}

/// The parser state of the simulated connection.
enum Stage {
    Proxy,
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Feeds `case.raw` in pieces whose sizes cycle through `pieces`; returns the
/// requests whose bodies completed and how the connection ended.
fn drive(case: &Case, pieces: &[usize], incremental: bool) -> (Vec<Received>, Ending) {
    let mut arrived = 0;
    let mut piece_sizes = pieces.iter().cycle();
    let mut position = 0;
    let mut stage = if case.proxy {
        Stage::Proxy
    } else {
        Stage::Head
    };
    let mut parser = HeadParser::new(case.limits);
    let mut received = Vec::new();
    let mut current: Option<(Received, bool)> = None;

    loop {
        let available = &case.raw[position..arrived];
        let step = match &mut stage {
            Stage::Proxy => step_proxy(available),
            Stage::Head if incremental => step_head(parser.parse(available), &mut current),
            Stage::Head => step_head(parse_head(available, &case.limits), &mut current),
            Stage::Length(remaining) => step_length(available, remaining, &mut current),
            Stage::Chunked(decoder) => step_chunked(decoder, available, &mut current),
        };

        match step {
            Step::Advance(used, next) => {
                position += used;
                if let Some(next) = next {
                    stage = next;
                }
                if let Some(ending) = finish_request(&mut stage, &mut current, &mut received) {
                    return (received, ending);
                }
            }
            Step::NeedMore(used) if arrived < case.raw.len() => {
                position += used;
                let size = *piece_sizes.next().expect("cycle never ends");
                arrived = (arrived + size).min(case.raw.len());
            }
            Step::NeedMore(used) => {
                position += used;
                let ending = end_of_input(&stage, position == arrived);
                if ending == Ending::TruncatedBody {
                    // The app was called; it sees the body bytes that came.
                    received.extend(current.take().map(|(request, _)| request));
                }
                return (received, ending);
            }
            Step::Stop(ending) => return (received, ending),
        }
    }
}

enum Step {
    /// Used this many bytes; move to the stage given, if any.
    Advance(usize, Option<Stage>),
    /// Used this many bytes and needs more input.
    NeedMore(usize),
    Stop(Ending),
}

fn step_proxy(available: &[u8]) -> Step {
    match proxy_header_present(available) {
        None => Step::NeedMore(0),
        Some(false) => Step::Advance(0, Some(Stage::Head)),
        Some(true) => match parse_proxy(available) {
            Ok(None) => Step::NeedMore(0),
            Ok(Some((_, used))) => Step::Advance(used, Some(Stage::Head)),
            Err(error) => Step::Stop(Ending::Refused(error.status())),
        },
    }
}

fn step_head(
    parsed: Result<Option<(RequestHead, usize)>, mercy::protocol::RequestError>,
    current: &mut Option<(Received, bool)>,
) -> Step {
    let (head, used) = match parsed {
        Ok(None) => return Step::NeedMore(0),
        Ok(Some(done)) => done,
        Err(error) => return Step::Stop(Ending::Refused(error.status())),
    };
    let next = match head.framing {
        BodyFraming::Empty => Stage::Length(0),
        BodyFraming::Length(length) => Stage::Length(length),
        BodyFraming::Chunked => Stage::Chunked(ChunkedDecoder::new()),
    };
    *current = Some((received_from(&head), head.keep_alive));
    Step::Advance(used, Some(next))
}

fn step_length(
    available: &[u8],
    remaining: &mut u64,
    current: &mut Option<(Received, bool)>,
) -> Step {
    if *remaining == 0 {
        return Step::Advance(0, None);
    }
    if available.is_empty() {
        return Step::NeedMore(0);
    }
    let taken =
        usize::try_from(*remaining).map_or(available.len(), |left| left.min(available.len()));
    let (request, _) = current.as_mut().expect("a body follows a head");
    request.body.extend_from_slice(&available[..taken]);
    *remaining -= taken as u64;
    Step::Advance(taken, None)
}

fn step_chunked(
    decoder: &mut ChunkedDecoder,
    available: &[u8],
    current: &mut Option<(Received, bool)>,
) -> Step {
    let (request, _) = current.as_mut().expect("a body follows a head");
    match decoder.decode(available) {
        Ok((used, Chunk::Data(data))) => {
            request.body.extend_from_slice(data);
            Step::Advance(used, None)
        }
        Ok((used, Chunk::NeedMore)) => Step::NeedMore(used),
        Ok((used, Chunk::End)) => Step::Advance(used, None),
        Err(_) => Step::Stop(Ending::BodyRefused),
    }
}

/// Once a body is complete, records the request and goes back to heads.
fn finish_request(
    stage: &mut Stage,
    current: &mut Option<(Received, bool)>,
    received: &mut Vec<Received>,
) -> Option<Ending> {
    let complete = match stage {
        Stage::Length(0) => true,
        Stage::Chunked(decoder) => decoder.is_done(),
        _ => false,
    };
    if !complete {
        return None;
    }

    let (request, keep_alive) = current.take().expect("a body follows a head");
    received.push(request);
    *stage = Stage::Head;
    (!keep_alive).then_some(Ending::Closed)
}

fn end_of_input(stage: &Stage, nothing_pending: bool) -> Ending {
    match stage {
        Stage::Head | Stage::Proxy if nothing_pending => Ending::Clean,
        Stage::Head | Stage::Proxy => Ending::IncompleteHead,
        Stage::Length(_) => Ending::TruncatedBody,
        Stage::Chunked(decoder) => match decoder.finish() {
            Ok(()) => Ending::Clean,
            Err(_) => Ending::BodyRefused,
        },
    }
}

/// The request as the environ shows it (body filled in as it arrives).
fn received_from(head: &RequestHead) -> Received {
    Received {
        method: head.method.to_string(),
        path: percent_decode(&head.path),
        query: head.query.to_vec(),
        minor_version: head.minor_version,
        headers: head
            .headers
            .iter()
            .map(|header| (header.name.to_ascii_uppercase(), header.value.to_vec()))
            .collect(),
        body: Vec::new(),
    }
}

fn load_cases() -> Vec<Case> {
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = checkout
        .ancestors()
        .skip(1)
        .map(|folder| folder.join(CORPUS))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("no {CORPUS} in a folder above {checkout:?}; it ships with the shared folder")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read the HTTP corpus {path:?}: {error}"));
    let document: Value = serde_json::from_str(&text).expect("requests.json is valid JSON");
    document
        .as_array()
        .expect("the corpus is a JSON array")
        .iter()
        .map(load_case)
        .collect()
}

fn load_case(value: &Value) -> Case {
    let name = value["name"].as_str().expect("case name").to_string();
    let raw = base64_decode(value["raw_b64"].as_str().expect("raw_b64"));
    let config = value["config"].as_object().expect("config object");

    let explained = DIFFERENCES.iter().any(|(listed, _, _)| *listed == name)
        || SETTING_NOTES.iter().any(|(listed, _)| *listed == name);
    for key in config.keys() {
        assert!(
            MERCY_SETTINGS.contains(&key.as_str()) || explained,
            "{name}: config key {key} has no mercy equivalent and no written reason"
        );
    }

    let (limits, proxy) = settings(config);
    let expected = expected_result(&name, &value["expect"]);
    Case {
        name,
        raw,
        limits,
        proxy,
        expected,
    }
}

/// Mercy's options for the corpus settings that have an equivalent.
fn settings(config: &serde_json::Map<String, Value>) -> (Limits, bool) {
    let mut limits = Limits::default();
    let number = |key: &str| config.get(key).and_then(Value::as_u64).map(|n| n as usize);

    if let Some(line) = number("limit_request_line") {
        limits.max_request_line = line;
    }
    if let Some(field) = number("limit_request_field_size") {
        limits.max_field_size = field;
    }
    // gunicorn has no whole-head limit: raising a line limit past --buffer-size
    // only works if --buffer-size is raised too (see SETTING_NOTES, valid/024).
    let default_head = Limits::default().max_head_bytes;
    let raised = |key: &str| number(key).is_some_and(|limit| limit > default_head);
    if raised("limit_request_line") || raised("limit_request_field_size") {
        limits.max_head_bytes = 64 * 1024;
    }

    let proxy = config.get("proxy_protocol").and_then(Value::as_bool) == Some(true);
    (limits, proxy)
}

fn expected_result(name: &str, expect: &Value) -> Expected {
    if let Some((_, difference, reason)) = DIFFERENCES.iter().find(|(listed, _, _)| *listed == name)
    {
        assert!(!reason.is_empty());
        return match difference {
            Difference::Refuse(status) => Expected::Refuse(*status),
            Difference::AcceptChunked07 => Expected::Accept(vec![chunked_07_request()]),
            Difference::Path(path) => {
                let mut request = expected_request(&expect["accept"][0]);
                request.path = path.as_bytes().to_vec();
                Expected::Accept(vec![request])
            }
        };
    }

    if let Some(accepted) = expect.get("accept") {
        let requests = accepted.as_array().expect("accept list");
        return Expected::Accept(requests.iter().map(expected_request).collect());
    }
    let kind = expect["reject"].as_str().expect("reject kind");
    expected_rejection(name, kind)
}

/// Maps gunicorn's exception names onto mercy's answers (corpus README).
fn expected_rejection(name: &str, kind: &str) -> Expected {
    // Forbidden trailers are named InvalidHeaderName by the corpus but are
    // found in the chunked body, while the app reads it.
    let in_trailers = name.contains("trailer_forbidden");
    match kind {
        "InvalidChunkSize" | "InvalidChunkExtension" | "ChunkMissingTerminator" => {
            Expected::RefuseBody
        }
        _ if in_trailers => Expected::RefuseBody,
        // The input ends inside the head: the connection closes, the app is never called.
        "NoMoreData" => Expected::Incomplete,
        "LimitRequestLine" => Expected::Refuse(414),
        "LimitRequestHeaders" => Expected::Refuse(431),
        _ => Expected::Refuse(400),
    }
}

/// invalid/chunked_07 under mercy: `Transfer_Encoding: gzip` dropped, chunked body read.
fn chunked_07_request() -> Received {
    Received {
        method: "POST".to_string(),
        path: b"/chunked_ambiguous_header_mapping".to_vec(),
        query: Vec::new(),
        minor_version: 1,
        headers: vec![(b"TRANSFER-ENCODING".to_vec(), b"chunked".to_vec())],
        body: b"hello world".to_vec(),
    }
}

fn expected_request(value: &Value) -> Received {
    let text = |value: &Value| latin1(value.as_str().expect("string"));
    let headers = value["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .filter(|(name, _)| !name.contains(&b'_'))
        .collect();

    Received {
        method: value["method"].as_str().expect("method").to_string(),
        path: percent_decode(&text(&value["uri"]["path"])),
        query: text(&value["uri"]["query"]),
        minor_version: value["version"][1].as_u64().expect("minor version") as u8,
        headers,
        body: base64_decode(value["body_b64"].as_str().expect("body_b64")),
    }
}

/// The corpus writes bytes as latin-1 strings.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 character"))
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let mut bits = 0u32;
    let mut bit_count = 0;

    for symbol in text.bytes().filter(|&symbol| symbol != b'=') {
        let value = ALPHABET
            .iter()
            .position(|&letter| letter == symbol)
            .expect("base64 symbol");
        bits = bits << 6 | value as u32;
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            bytes.push((bits >> bit_count) as u8);
        }
    }
    bytes
}

/// Piece sizes from a seeded generator: mostly small, some large.
fn random_pieces(length: usize, seed: u64) -> Vec<usize> {
    let mut rng = XorShift::new(seed);
    let mut pieces = Vec::new();
    let mut total = 0;
    while total < length.max(1) {
        let size = if rng.below(4) == 0 {
            1 + rng.below(length / 2 + 1)
        } else {
            1 + rng.below(16)
        };
        pieces.push(size);
        total += size;
    }
    pieces
}

/// Mutated corpus inputs: no panics, and the same answer however the bytes are split.
#[test]
fn mutated_corpus_inputs_parse_the_same_in_any_pieces() {
    let cases = load_cases();
    let tight = Limits {
        max_head_bytes: 96,
        max_request_line: 40,
        max_header_count: 3,
        max_field_size: 24,
    };
    let mut rng = XorShift::new(0x5eed);

    for case in &cases {
        for _ in 0..MUTATIONS_PER_CASE {
            let input = mutate(&case.raw, &mut rng);
            for limits in [Limits::default(), tight] {
                let whole = parse_head(&input, &limits);
                let split = parse_in_pieces(&input, limits, &[1]);
                let random =
                    parse_in_pieces(&input, limits, &random_pieces(input.len(), rng.next()));
                assert_eq!(
                    whole, split,
                    "{}: byte by byte differs on {input:?}",
                    case.name
                );
                assert_eq!(
                    whole, random,
                    "{}: random pieces differ on {input:?}",
                    case.name
                );
                if let Ok(Some((head, consumed))) = &whole {
                    check_policy_holds(head, *consumed, &limits);
                }
            }
            let body = body_after_head(&input);
            let whole = decode_in_pieces(body, &[body.len().max(1)]);
            assert_eq!(
                whole,
                decode_in_pieces(body, &[1]),
                "{}: chunked {body:?}",
                case.name
            );
        }
    }
}

const MUTATIONS_PER_CASE: usize = 40;

/// What every accepted head must satisfy, whatever the input was.
fn check_policy_holds(head: &RequestHead, consumed: usize, limits: &Limits) {
    assert!(consumed <= limits.max_head_bytes);
    assert!(!head.method.bytes().any(|byte| byte.is_ascii_lowercase()));
    assert_ne!(&*head.method, "CONNECT");
    assert!(head.minor_version <= 1);
    assert!(head.path.starts_with(b"/") || &*head.path == b"*");
    for header in &head.headers {
        assert!(!header.name.contains(&b'_'), "{head:?}");
        let control = |byte: &u8| (*byte < b' ' && *byte != b'\t') || *byte == 0x7f;
        assert!(!header.value.iter().any(control), "{head:?}");
    }
    let has = |name: &str| head.header(name).is_some();
    if head.framing == BodyFraming::Chunked {
        assert!(
            !has("content-length") && head.minor_version == 1,
            "{head:?}"
        );
    }
}

type HeadResult = Result<Option<(RequestHead, usize)>, mercy::protocol::RequestError>;

/// A [`HeadParser`] fed growing prefixes; stops at the first answer.
fn parse_in_pieces(input: &[u8], limits: Limits, pieces: &[usize]) -> HeadResult {
    let mut parser = HeadParser::new(limits);
    let mut end = 0;
    for size in pieces.iter().cycle() {
        end = (end + size).min(input.len());
        let result = parser.parse(&input[..end]);
        if !matches!(result, Ok(None)) || end == input.len() {
            return result;
        }
    }
    unreachable!("the cycle ends when the input does")
}

/// Body bytes and how decoding ended (`None` for needing more at the end).
fn decode_in_pieces(input: &[u8], pieces: &[usize]) -> (Vec<u8>, Option<Result<usize, String>>) {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let (mut arrived, mut position) = (0, 0);
    let mut sizes = pieces.iter().cycle();

    loop {
        match decoder.decode(&input[position..arrived]) {
            Ok((used, Chunk::Data(data))) => {
                body.extend_from_slice(data);
                position += used;
            }
            Ok((used, Chunk::End)) => return (body, Some(Ok(position + used))),
            Ok((used, Chunk::NeedMore)) if arrived < input.len() => {
                position += used;
                arrived = (arrived + sizes.next().expect("cycle")).min(input.len());
            }
            Ok((_, Chunk::NeedMore)) => return (body, None),
            Err(error) => return (body, Some(Err(error.to_string()))),
        }
    }
}

fn body_after_head(input: &[u8]) -> &[u8] {
    input
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(input, |end| &input[end + 4..])
}

/// One to three random edits biased towards bytes that matter to HTTP framing.
fn mutate(raw: &[u8], rng: &mut XorShift) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n \t:;_=\"\\,0aAfF\x00\x7f\xff";
    let mut bytes = raw.to_vec();
    let edits = 1 + rng.below(3);

    for _ in 0..edits {
        let at = rng.below(bytes.len() + 1);
        let byte = if rng.below(4) == 0 {
            rng.next() as u8
        } else {
            INTERESTING[rng.below(INTERESTING.len())]
        };
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at.max(1)),
        }
    }
    bytes
}

/// A small seeded generator, so failures repeat.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}
