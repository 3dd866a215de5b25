//! Where options come from, in order of precedence (later wins): the
//! `UWSGI_*` and `MERCY_*` environment variables, ini files (`mercy app.ini`,
//! `--ini FILE[:SECTION]`, sections `[uwsgi]` and `[mercy]`), then the
//! command line. Everything becomes one argument list that clap parses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use ini::{Ini, ParseOption};

use super::compat::{self, Treatment};
use super::{ConfigError, Options};

/// Environment variables of mercy's own that are not options.
const RESERVED_ENV: [&str; 4] = [
    "MERCY_WORKER",
    "MERCY_LOG",
    "MERCY_BIN",
    "MERCY_SOCKETS_ACTIVATED",
];

/// `UWSGI_*` variables that uWSGI keeps for itself rather than reading as
/// options; mercy leaves them alone too.
const UWSGI_RESERVED_ENV: [&str; 8] = [
    "UWSGI_RELOADS",
    "UWSGI_VASSALS_DIR",
    "UWSGI_EMPEROR_FD",
    "UWSGI_BROODLORD_NUM",
    "UWSGI_EMPEROR_FD_CONFIG",
    "UWSGI_EMPEROR_PROXY",
    "UWSGI_JAIL_PID",
    "UWSGI_ORIGINAL_PROC_NAME",
];

/// How deep `ini = FILE` may nest inside ini files.
const MAX_INI_DEPTH: usize = 8;

/// Something about the options an operator should read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A uWSGI option mercy accepts with no effect.
    AlreadySo { option: String, why: &'static str },
    /// A uWSGI option mercy does not support.
    Unsupported {
        option: String,
        instead: &'static str,
    },
    /// A `UWSGI_*` environment variable that names no option: as in uWSGI,
    /// it only defines a placeholder.
    EnvironmentPlaceholder { variable: String, name: String },
}

/// The parsed options and what to say about them.
#[derive(Debug)]
pub struct Loaded {
    pub options: Options,
    pub notices: Vec<Notice>,
}

/// Loading failed: a clap error (bad or unknown option on the command line)
/// or a configuration error (an ini file, a placeholder, `--strict`).
#[derive(Debug)]
pub enum LoadError {
    Usage(clap::Error),
    Config(ConfigError),
}

impl From<ConfigError> for LoadError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

/// Every option and ini key as read, in order (environment, ini files,
/// command line), for the app's `uwsgi.opt`. Set by the first `load`.
static SEEN: std::sync::OnceLock<Vec<(String, Option<String>)>> = std::sync::OnceLock::new();

/// The options as `uwsgi.opt` shows them: every source, custom ini keys
/// included; a flag has no value.
pub fn seen_options() -> &'static [(String, Option<String>)] {
    SEEN.get().map_or(&[], Vec::as_slice)
}

/// Reads every source of options. `args` includes the program name.
pub fn load(args: Vec<String>) -> Result<Loaded, LoadError> {
    let known = KnownOptions::new();
    let (program, command_line) = match args.split_first() {
        Some((program, rest)) => (program.clone(), rest.to_vec()),
        None => ("mercy".to_owned(), Vec::new()),
    };
    let command_line = known.rewrite_command_line(command_line);
    let command_line_seen = super::raw_options(command_line.iter().cloned());
    let mut notices = Vec::new();
    let command_line = known.filter_command_line(command_line, &mut notices);

    // A first parse of the command line alone finds the ini files, the
    // placeholders and --strict.
    let first =
        Options::try_parse_from(std::iter::once(program.clone()).chain(command_line.clone()))
            .map_err(LoadError::Usage)?;
    let mut placeholders: HashMap<String, String> = HashMap::new();
    for pair in &first.set_ph {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError::BadPlaceholder(pair.clone()))?;
        placeholders.insert(name.to_owned(), value.to_owned());
    }

    let environment = environment_options(&known);
    let mut strict = first.strict || environment.sets_strict();
    let mut pairs = Vec::new();
    let mut environment_files = Vec::new();
    for option in environment.options {
        known.check_environment_value(&option)?;
        if option.name == "ini" {
            environment_files.push(split_section(&option.value));
        }
        pairs.push((option.name, Some(option.value)));
    }
    let mut seen = pairs.clone();
    for (variable, name, value) in environment.placeholders {
        if strict {
            return Err(ConfigError::StrictEnvironment { variable }.into());
        }
        seen.push((name.clone(), Some(value.clone())));
        placeholders.insert(name.clone(), value);
        notices.push(Notice::EnvironmentPlaceholder { variable, name });
    }
    // As uWSGI reads `UWSGI_INI` with the environment, before the command
    // line, its files come first and the command line's override them.
    let files = environment_files
        .into_iter()
        .chain(first.config_files.iter().map(|path| (path.clone(), None)))
        .chain(first.ini.iter().map(|spec| split_section(spec)));
    for (path, section) in files {
        let mut reader = IniReader {
            known: &known,
            placeholders: &mut placeholders,
            strict: &mut strict,
            depth: 0,
        };
        let (options, keys) = reader.read(&path, section.as_deref())?;
        pairs.extend(options);
        seen.extend(keys);
    }
    seen.extend(command_line_seen);
    let _ = SEEN.set(seen);

    let mut arguments = vec![program];
    for (name, value) in pairs {
        if known.is_own(&name) {
            push_argument(&mut arguments, &known, &name, value);
        } else {
            note(&mut notices, &name);
        }
    }
    arguments.extend(command_line);

    if strict {
        if let Some(Notice::Unsupported { option, instead }) = notices
            .iter()
            .find(|notice| matches!(notice, Notice::Unsupported { .. }))
        {
            return Err(ConfigError::Strict {
                option: option.clone(),
                instead,
            }
            .into());
        }
    }
    let options = Options::try_parse_from(arguments).map_err(LoadError::Usage)?;
    Ok(Loaded { options, notices })
}

/// Whether a clap error is about an option's value (one out of its range,
/// or not a number), rather than the command line's shape.
pub fn is_bad_value(error: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    )
}

/// Whether `--log-json` was given in any source read so far, for an error
/// found before the options are whole.
pub fn log_json_requested() -> bool {
    let in_command_line = std::env::args().any(|arg| arg == "--log-json");
    let seen = seen_options()
        .iter()
        .any(|(name, value)| name == "log-json" && value.as_deref().is_none_or(is_true));
    in_command_line || seen
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn clap_reason(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Notes a uWSGI option mercy has no option for, once per name.
fn note(notices: &mut Vec<Notice>, name: &str) {
    let notice = match compat::treatment(name) {
        Some(Treatment::AlreadySo(why)) => Notice::AlreadySo {
            option: name.to_owned(),
            why,
        },
        Some(Treatment::Unsupported(instead)) => Notice::Unsupported {
            option: name.to_owned(),
            instead,
        },
        Some(Treatment::Supported) | None => return,
    };
    if !notices.contains(&notice) {
        notices.push(notice);
    }
}

/// `file.ini:section` -> (file.ini, section).
fn split_section(spec: &str) -> (PathBuf, Option<String>) {
    match spec.rsplit_once(':') {
        Some((path, section)) if !section.contains('/') && !section.is_empty() => {
            (PathBuf::from(path), Some(section.to_owned()))
        }
        _ => (PathBuf::from(spec), None),
    }
}

/// Adds `--name value`, or `--name` for a flag whose value is true.
fn push_argument(
    arguments: &mut Vec<String>,
    known: &KnownOptions,
    name: &str,
    value: Option<String>,
) {
    if known.takes_value(name) {
        // One argument, so that a value starting with `-` stays a value.
        let value = value.unwrap_or_default();
        arguments.push(format!("--{name}={value}"));
    } else if value.as_deref().is_none_or(is_true) {
        arguments.push(format!("--{name}"));
    }
}

/// Booleans as uWSGI reads them: anything but false, off, no, 0 or an
/// empty value is true.
fn is_true(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "off" | "no" | "0"
    )
}

/// An option set by an environment variable (`UWSGI_PROCESSES=4`).
struct EnvironmentOption {
    variable: String,
    name: String,
    value: String,
}

/// The options found in the environment.
struct EnvironmentOptions {
    /// Options mercy or uWSGI know, sorted by variable.
    options: Vec<EnvironmentOption>,
    /// `(variable, placeholder, value)` for `UWSGI_*` names that are no
    /// option.
    placeholders: Vec<(String, String, String)>,
}

impl EnvironmentOptions {
    fn sets_strict(&self) -> bool {
        self.options
            .iter()
            .any(|option| option.name == "strict" && is_true(&option.value))
    }
}

/// `UWSGI_FOO_BAR=x` and `MERCY_FOO_BAR=x` mean `--foo-bar x` for names
/// mercy or uWSGI know. Any other `UWSGI_*` variable defines a placeholder,
/// as in uWSGI; other `MERCY_*` variables are the app's own and ignored.
fn environment_options(known: &KnownOptions) -> EnvironmentOptions {
    let mut variables: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| !RESERVED_ENV.contains(&key.as_str()))
        .filter(|(key, _)| !UWSGI_RESERVED_ENV.contains(&key.as_str()))
        .collect();
    variables.sort();
    let mut found = EnvironmentOptions {
        options: Vec::new(),
        placeholders: Vec::new(),
    };
    for (key, value) in variables {
        let (uwsgi, rest) = match (key.strip_prefix("UWSGI_"), key.strip_prefix("MERCY_")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => continue,
        };
        let name = rest.to_ascii_lowercase().replace('_', "-");
        if known.is_own(&name) || compat::treatment(&name).is_some() {
            found.options.push(EnvironmentOption {
                variable: key,
                name,
                value,
            });
        } else if uwsgi && !name.is_empty() {
            found.placeholders.push((key, name, value));
        }
    }
    found
}

/// Reads ini files: the `[uwsgi]` and `[mercy]` sections (or the one asked
/// for), in order, expanding placeholders, magic variables and environment
/// variables, and following `ini = FILE` inside them.
struct IniReader<'a> {
    known: &'a KnownOptions,
    placeholders: &'a mut HashMap<String, String>,
    /// Set by `--strict`, or by a `strict` key read so far.
    strict: &'a mut bool,
    depth: usize,
}

impl IniReader<'_> {
    fn read(&mut self, path: &Path, section: Option<&str>) -> Result<IniOptions, ConfigError> {
        let bad = |reason: String| ConfigError::Ini {
            path: path.to_owned(),
            line: None,
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        // Editors on Windows start a UTF-8 file with a byte order mark;
        // left in, it would glue itself to the first section's name.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let options = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ParseOption::default()
        };
        // Read first: it places the keys, and finds a section header
        // without its `]` on its line (the parser would only see the end).
        let mut lines = KeyLines::of(text).map_err(|(line, reason)| ConfigError::Ini {
            path: path.to_owned(),
            line: Some(line),
            reason,
        })?;
        let ini = Ini::load_from_str_opt(text, options).map_err(|e| bad(e.msg.into_owned()))?;
        let sections: Vec<&str> = match section {
            Some(name) => vec![name],
            None => vec!["uwsgi", "mercy"],
        };
        if !sections
            .iter()
            .any(|name| ini.section(Some(*name)).is_some())
        {
            return Err(bad(format!(
                "it has no [{}] section",
                sections.join("] or [")
            )));
        }
        let magic = Magic::of(path);
        let mut earlier: HashMap<String, String> = HashMap::new();
        let mut read = (Vec::new(), Vec::new());
        for name in sections {
            for properties in ini.section_all(Some(name)) {
                for (key, raw) in properties.iter() {
                    let place = IniPlace {
                        path,
                        line: lines.next(name, key),
                    };
                    let value = expand(raw, self.placeholders, &earlier, &magic)
                        .map_err(|reason| place.error(format!("{key} = {raw}: {reason}")))?;
                    self.key(&place, key, value, &mut earlier, &mut read)?;
                }
            }
        }
        Ok(read)
    }

    /// One `key = value` line, its value expanded.
    fn key(
        &mut self,
        place: &IniPlace,
        key: &str,
        value: String,
        earlier: &mut HashMap<String, String>,
        (pairs, keys): &mut IniOptions,
    ) -> Result<(), ConfigError> {
        let bad = |reason: String| place.error(reason);
        let not_a_placeholder =
            |value: &str| bad(format!("{key} = {value}: a placeholder is NAME=VALUE"));
        let (key, value) = match key {
            "set-ph" | "set-placeholder" => {
                let (name, value) = value
                    .split_once('=')
                    .ok_or_else(|| not_a_placeholder(&value))?;
                self.placeholders.insert(name.to_owned(), value.to_owned());
                return Ok(());
            }
            // `set = name=value`: an option if there is one of that name,
            // else a placeholder.
            "set" => match value.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => return Err(not_a_placeholder(&value)),
            },
            _ => (key.to_owned(), value),
        };
        if key == "ini" {
            return self.nested(place, &value, pairs, keys);
        }
        earlier.insert(key.clone(), value.clone());
        keys.push((key.clone(), Some(value.clone())));
        if key == "strict" && is_true(&value) {
            *self.strict = true;
        }
        if self.known.is_own(&key) {
            self.known
                .check_value(&key, &value)
                .map_err(|reason| bad(format!("{key} = {value}: {reason}")))?;
            pairs.push((key, Some(value)));
        } else if compat::treatment(&key).is_some() {
            pairs.push((key, Some(value)));
        } else if *self.strict {
            return Err(bad(format!(
                "unknown option {key:?} (without --strict it would define a placeholder)"
            )));
        } else {
            self.placeholders.insert(key, value);
        }
        Ok(())
    }

    /// `ini = other.ini[:section]` inside an ini file reads that file there.
    fn nested(
        &mut self,
        place: &IniPlace,
        spec: &str,
        pairs: &mut Vec<(String, Option<String>)>,
        keys: &mut Vec<(String, Option<String>)>,
    ) -> Result<(), ConfigError> {
        if self.depth >= MAX_INI_DEPTH {
            return Err(place.error(format!(
                "ini = {spec}: files nest more than {MAX_INI_DEPTH} deep"
            )));
        }
        let (nested_path, section) = split_section(spec);
        let mut inner = IniReader {
            known: self.known,
            placeholders: self.placeholders,
            strict: self.strict,
            depth: self.depth + 1,
        };
        let (inner_pairs, inner_keys) = inner.read(&nested_path, section.as_deref())?;
        pairs.extend(inner_pairs);
        keys.extend(inner_keys);
        Ok(())
    }
}

/// Where in an ini file a key was written.
struct IniPlace<'a> {
    path: &'a Path,
    line: Option<usize>,
}

impl IniPlace<'_> {
    fn error(&self, reason: String) -> ConfigError {
        ConfigError::Ini {
            path: self.path.to_owned(),
            line: self.line,
            reason,
        }
    }
}

/// The line numbers of each key of an ini file, by section and key in file
/// order, found as the ini parser finds them (a key ends at the first `=`
/// or `:`), so that the n-th value of a key read from a section is placed
/// on the n-th line that sets it.
struct KeyLines {
    lines: HashMap<(String, String), std::collections::VecDeque<usize>>,
}

impl KeyLines {
    fn of(text: &str) -> Result<Self, (usize, String)> {
        let mut lines: HashMap<(String, String), std::collections::VecDeque<usize>> =
            HashMap::new();
        let mut section = String::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(header) = line.strip_prefix('[') {
                let Some((name, _)) = header.split_once(']') else {
                    return Err((index + 1, format!("{line}: a section header ends with ]")));
                };
                section = name.trim().to_owned();
                continue;
            }
            if line.is_empty() || line.starts_with([';', '#']) {
                continue;
            }
            let key = line.split(['=', ':']).next().unwrap_or(line).trim();
            lines
                .entry((section.clone(), key.to_owned()))
                .or_default()
                .push_back(index + 1);
        }
        Ok(Self { lines })
    }

    /// The line of the next value of `key` in `section`, if it was found.
    fn next(&mut self, section: &str, key: &str) -> Option<usize> {
        self.lines
            .get_mut(&(section.to_owned(), key.to_owned()))?
            .pop_front()
    }
}

/// An ini file's options for mercy, and every key it set (for `uwsgi.opt`).
type IniOptions = (Vec<(String, Option<String>)>, Vec<(String, Option<String>)>);

/// uWSGI's magic variables for one config file.
struct Magic {
    dir: String,
    name: String,
    file: String,
    path: String,
    extension: String,
    dir_name: String,
}

impl Magic {
    fn of(path: &Path) -> Self {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let dir = absolute.parent().unwrap_or(Path::new("/"));
        let text = |value: Option<&std::ffi::OsStr>| {
            value
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Self {
            dir: format!("{}/", dir.display()).replace("//", "/"),
            name: text(absolute.file_stem()),
            file: text(absolute.file_name()),
            path: absolute.display().to_string(),
            extension: text(absolute.extension()),
            dir_name: text(dir.file_name()),
        }
    }
}

/// Expands `%(name)`, `%d` and the other magic variables, `%%`, and
/// `$(ENV)` in a value.
fn expand(
    raw: &str,
    placeholders: &HashMap<String, String>,
    earlier: &HashMap<String, String>,
    magic: &Magic,
) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(position) = rest.find(['%', '$']) {
        out.push_str(&rest[..position]);
        let tail = &rest[position..];
        if let Some(inner) = tail.strip_prefix("%(") {
            let end = inner.find(')').ok_or("an unclosed %(")?;
            let name = &inner[..end];
            // As in uWSGI, an unknown name stays as it is (a log format's
            // %(addr), say).
            match placeholders.get(name).or_else(|| earlier.get(name)) {
                Some(value) => out.push_str(value),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &inner[end + 1..];
        } else if let Some(inner) = tail.strip_prefix("$(") {
            let end = inner.find(')').ok_or("an unclosed $(")?;
            out.push_str(&std::env::var(&inner[..end]).unwrap_or_default());
            rest = &inner[end + 1..];
        } else if tail.starts_with('%') && tail.len() > 1 {
            let letter = tail.as_bytes()[1];
            let value = match letter {
                b'd' => magic.dir.clone(),
                b'n' => magic.name.clone(),
                b's' => magic.file.clone(),
                b'p' => magic.path.clone(),
                b'x' => magic.extension.clone(),
                b'c' => magic.dir_name.clone(),
                b'k' => online_cpus().to_string(),
                b'h' => nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                b'%' => "%".to_owned(),
                _ => tail[..2].to_owned(),
            };
            out.push_str(&value);
            rest = &tail[2..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The number of CPUs online, as uWSGI's `%k` counts them (not limited by
/// this process's affinity or cgroup).
fn online_cpus() -> libc::c_long {
    // SAFETY: sysconf only reads a system value; it has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    online.max(1)
}

/// mercy's own options, from clap's definition.
struct KnownOptions {
    command: clap::Command,
}

impl KnownOptions {
    fn new() -> Self {
        let mut command = Options::command();
        // Building adds the options clap provides itself (`--help`).
        command.build();
        Self { command }
    }

    fn find(&self, name: &str) -> Option<&clap::Arg> {
        self.command.get_arguments().find(|arg| {
            arg.get_long() == Some(name) || arg.get_all_aliases().is_some_and(|a| a.contains(&name))
        })
    }

    fn is_own(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Parses one option's value as the command line would, so that a bad
    /// value is reported where it was written; the reason on error.
    fn check_value(&self, name: &str, value: &str) -> Result<(), String> {
        if !self.takes_value(name) {
            return Ok(());
        }
        let arguments = ["mercy".to_owned(), format!("--{name}={value}")];
        match self.command.clone().try_get_matches_from(arguments) {
            Ok(_) => Ok(()),
            Err(error) => Err(clap_reason(&error)),
        }
    }

    /// Refuses an environment variable whose value the option cannot take,
    /// naming the variable.
    fn check_environment_value(&self, option: &EnvironmentOption) -> Result<(), ConfigError> {
        if !self.is_own(&option.name) {
            return Ok(());
        }
        self.check_value(&option.name, &option.value)
            .map_err(|reason| ConfigError::Environment {
                variable: option.variable.clone(),
                value: option.value.clone(),
                reason,
            })
    }

    fn takes_value(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|arg| arg.get_action().takes_values())
    }

    /// Writes uWSGI's spellings in mercy's: a one-letter uWSGI option that
    /// mercy has no letter for (`-M`) in its long form, and `--set
    /// NAME=VALUE` as the option it sets (`--NAME VALUE`), or as
    /// `--set-ph NAME=VALUE` when NAME is no option.
    fn rewrite_command_line(&self, args: Vec<String>) -> Vec<String> {
        let mut rewritten = Vec::with_capacity(args.len());
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = self.long_form(arg);
            let set = match arg.strip_prefix("--set") {
                Some("") => args.next(),
                Some(inline) => inline.strip_prefix('=').map(str::to_owned),
                None => None,
            };
            let Some(set) = set else {
                rewritten.push(arg);
                continue;
            };
            match set.split_once('=') {
                Some((name, value)) if self.is_option(name) => {
                    self.push_set(&mut rewritten, name, value);
                }
                // No `=`: clap reports it as a placeholder that is not
                // NAME=VALUE.
                _ => rewritten.extend(["--set-ph".to_owned(), set]),
            }
        }
        rewritten
    }

    /// `-M` as `--master`, for uWSGI's letters that mercy does not define.
    fn long_form(&self, arg: String) -> String {
        let mut chars = arg.chars();
        let (Some('-'), Some(letter), None) = (chars.next(), chars.next(), chars.next()) else {
            return arg;
        };
        let mercy_has_it = self
            .command
            .get_arguments()
            .any(|option| option.get_short() == Some(letter));
        match compat::long_name(letter) {
            Some(long) if !mercy_has_it => format!("--{long}"),
            _ => arg,
        }
    }

    /// `--set NAME=VALUE` for an option: `--NAME VALUE`, or `--NAME` for a
    /// flag that VALUE turns on (nothing when it turns it off).
    fn push_set(&self, args: &mut Vec<String>, name: &str, value: &str) {
        let takes_value = if self.is_own(name) {
            self.takes_value(name)
        } else {
            compat::takes_value(name)
        };
        if takes_value {
            args.extend([format!("--{name}"), value.to_owned()]);
        } else if is_true(value) {
            args.push(format!("--{name}"));
        }
    }

    /// Whether mercy or uWSGI has an option of this name.
    fn is_option(&self, name: &str) -> bool {
        self.is_own(name) || compat::treatment(name).is_some()
    }

    /// Takes uWSGI options that mercy has no option for out of the command
    /// line (with their value), noting each.
    fn filter_command_line(&self, args: Vec<String>, notices: &mut Vec<Notice>) -> Vec<String> {
        let mut kept = Vec::with_capacity(args.len());
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            let Some(option) = arg.strip_prefix("--") else {
                kept.push(arg);
                continue;
            };
            let (name, inline_value) = match option.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value)),
                None => (option.to_owned(), None),
            };
            if self.is_own(&name) || compat::treatment(&name).is_none() {
                kept.push(arg);
                continue;
            }
            if inline_value.is_none() && compat::takes_value(&name) {
                args.next();
            }
            note(notices, &name);
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn magic() -> Magic {
        Magic::of(Path::new("/etc/app/site.ini"))
    }

    #[test]
    fn expands_placeholders_magic_and_environment() {
        let placeholders = HashMap::from([("base".to_owned(), "/srv".to_owned())]);
        let earlier = HashMap::from([("chdir".to_owned(), "/srv/app".to_owned())]);
        std::env::set_var("MERCY_TEST_EXPAND", "42");
        let expanded = expand(
            "%(base)/x %(chdir) %d %n $(MERCY_TEST_EXPAND) 100%%",
            &placeholders,
            &earlier,
            &magic(),
        )
        .expect("expands");
        assert_eq!(expanded, "/srv/x /srv/app /etc/app/ site 42 100%");
    }

    #[test]
    fn an_unknown_placeholder_stays_as_it_is() {
        let expanded = expand(
            "%(addr) - %(user)",
            &HashMap::new(),
            &HashMap::new(),
            &magic(),
        )
        .expect("expands");
        assert_eq!(expanded, "%(addr) - %(user)");
    }

    #[test]
    fn booleans_follow_uwsgi() {
        for truthy in ["true", "1", "yes", "on", "", "anything"] {
            assert!(is_true(truthy), "{truthy}");
        }
        for falsy in ["false", "0", "no", "off", "OFF"] {
            assert!(!is_true(falsy), "{falsy}");
        }
    }

    #[test]
    fn ini_sections_repeat_keys_and_define_placeholders() {
        let dir = std::env::temp_dir().join(format!("mercy-ini-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("app.ini");
        std::fs::write(
            &path,
            "[uwsgi]\nbase = /srv\nhttp = :8000\nhttp = :8001\nchdir = %(base)/app\n\
             master = true\nenable-threads = false\n[mercy]\nprocesses = 3\n",
        )
        .expect("write ini");
        let loaded = load(vec!["mercy".into(), path.display().to_string()]).expect("loads");
        assert_eq!(loaded.options.http, vec![":8000", ":8001"]);
        assert_eq!(loaded.options.chdir, Some(PathBuf::from("/srv/app")));
        assert_eq!(loaded.options.processes, 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ini_set_and_nested_ini() {
        let dir = std::env::temp_dir().join(format!("mercy-ini-nested-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let inner = dir.join("inner.ini");
        std::fs::write(&inner, "[uwsgi]\nprocesses = 4\n[extra]\nthreads = 9\n")
            .expect("write inner ini");
        let outer = dir.join("outer.ini");
        std::fs::write(
            &outer,
            format!(
                "[uwsgi]\nset = base=/srv\nset = threads=2\nchdir = %(base)/app\n\
                 ini = {}\nini = {}:extra\nset = disable-logging=true\n",
                inner.display(),
                inner.display()
            ),
        )
        .expect("write outer ini");
        let loaded = load(vec!["mercy".into(), outer.display().to_string()]).expect("loads");
        assert_eq!(loaded.options.chdir, Some(PathBuf::from("/srv/app")));
        assert_eq!(loaded.options.processes, 4);
        assert_eq!(loaded.options.threads, Some(9));
        assert!(loaded.options.disable_logging);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn supported_means_mercy_has_the_option() {
        let known = KnownOptions::new();
        for (name, treatment) in compat::all_options() {
            let supported = treatment == Treatment::Supported;
            assert_eq!(known.is_own(name), supported, "--{name} is {treatment:?}");
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn uwsgi_spellings_on_the_command_line() {
        let known = KnownOptions::new();
        let rewritten = known.rewrite_command_line(args(&[
            "-M",
            "-p",
            "2",
            "--set",
            "threads=4",
            "--set=disable-logging=true",
            "--set",
            "master=false",
            "-S",
            "base=/srv",
            "--set",
            "cheaper=2",
        ]));
        let expected = [
            "--master",
            "-p",
            "2",
            "--threads",
            "4",
            "--disable-logging",
            "--set-ph",
            "base=/srv",
            "--cheaper",
            "2",
        ];
        assert_eq!(rewritten, args(&expected));

        let mut notices = Vec::new();
        let kept = known.filter_command_line(
            args(&[
                "--master",
                "app.ini",
                "--cheaper",
                "2",
                "--cheaper=3",
                "--threads",
                "4",
            ]),
            &mut notices,
        );
        assert_eq!(kept, args(&["app.ini", "--threads", "4"]));
        let named: Vec<&str> = notices
            .iter()
            .map(|notice| match notice {
                Notice::AlreadySo { option, .. } | Notice::Unsupported { option, .. } => {
                    option.as_str()
                }
                Notice::EnvironmentPlaceholder { name, .. } => name.as_str(),
            })
            .collect();
        assert_eq!(named, ["master", "cheaper"]);
    }
}
