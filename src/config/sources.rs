//! Where options come from, in order of precedence (later wins): the
//! `UWSGI_*` and `MERCY_*` environment variables, ini files (`mercy app.ini`,
//! `--ini FILE[:SECTION]`, sections `[uwsgi]` and `[mercy]`), then the
//! command line. Everything becomes one argument list that clap parses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use ini::{Ini, ParseOption};

use super::compat::{treatment, Treatment};
use super::{ConfigError, Options};

/// Environment variables of mercy's own that are not options.
const RESERVED_ENV: [&str; 4] = [
    "MERCY_WORKER",
    "MERCY_LOG",
    "MERCY_BIN",
    "MERCY_SOCKETS_ACTIVATED",
];

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
    let mut notices = Vec::new();
    let command_line = known.filter_command_line(command_line, &mut notices);

    // A first parse of the command line alone finds the ini files, the
    // placeholders and --strict.
    let first =
        Options::try_parse_from(std::iter::once(program.clone()).chain(command_line.clone()))
            .map_err(LoadError::Usage)?;
    let strict = first.strict;
    let mut placeholders: HashMap<String, String> = HashMap::new();
    for pair in &first.set_ph {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError::BadPlaceholder(pair.clone()))?;
        placeholders.insert(name.to_owned(), value.to_owned());
    }

    let mut pairs: Vec<(String, Option<String>)> = environment_pairs(&known);
    let mut seen = pairs.clone();
    let files = first
        .config_files
        .iter()
        .map(|path| (path.clone(), None))
        .chain(first.ini.iter().map(|spec| split_section(spec)));
    for (path, section) in files {
        let (options, keys) =
            read_ini(&path, section.as_deref(), &known, &mut placeholders, strict)?;
        pairs.extend(options);
        seen.extend(keys);
    }
    seen.extend(super::raw_options(command_line.iter().cloned()));
    let _ = SEEN.set(seen);

    let mut arguments = vec![program];
    for (name, value) in pairs {
        match treatment(&name).filter(|_| !known.is_own(&name)) {
            Some(Treatment::AlreadySo(why)) => {
                notices.push(Notice::AlreadySo { option: name, why })
            }
            Some(Treatment::Unsupported(instead)) => notices.push(Notice::Unsupported {
                option: name,
                instead,
            }),
            None => push_argument(&mut arguments, &known, &name, value),
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
        arguments.push(format!("--{name}"));
        arguments.push(value.unwrap_or_default());
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

/// `UWSGI_FOO_BAR=x` and `MERCY_FOO_BAR=x` mean `--foo-bar x`, for names
/// mercy or uWSGI know; other variables with these prefixes are ignored.
fn environment_pairs(known: &KnownOptions) -> Vec<(String, Option<String>)> {
    let mut pairs: Vec<(String, Option<String>)> = std::env::vars()
        .filter(|(key, _)| !RESERVED_ENV.contains(&key.as_str()))
        .filter_map(|(key, value)| {
            let name = key
                .strip_prefix("UWSGI_")
                .or_else(|| key.strip_prefix("MERCY_"))?
                .to_ascii_lowercase()
                .replace('_', "-");
            (known.is_own(&name) || treatment(&name).is_some()).then_some((name, Some(value)))
        })
        .collect();
    pairs.sort();
    pairs
}

/// Reads the `[uwsgi]` and `[mercy]` sections (or the one asked for) of an
/// ini file, in order, expanding placeholders, magic variables and
/// environment variables.
fn read_ini(
    path: &Path,
    section: Option<&str>,
    known: &KnownOptions,
    placeholders: &mut HashMap<String, String>,
    strict: bool,
) -> Result<IniOptions, ConfigError> {
    let bad = |reason: String| ConfigError::Ini {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let options = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(&text, options).map_err(|e| bad(e.to_string()))?;
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
    let mut pairs = Vec::new();
    let mut keys = Vec::new();
    for name in sections {
        for properties in ini.section_all(Some(name)) {
            for (key, raw) in properties.iter() {
                let value = expand(raw, placeholders, &earlier, &magic)
                    .map_err(|reason| bad(format!("{key} = {raw}: {reason}")))?;
                if matches!(key, "set-ph" | "set-placeholder") {
                    let (name, value) = value
                        .split_once('=')
                        .ok_or_else(|| ConfigError::BadPlaceholder(value.clone()))?;
                    placeholders.insert(name.to_owned(), value.to_owned());
                    continue;
                }
                earlier.insert(key.to_owned(), value.clone());
                keys.push((key.to_owned(), Some(value.clone())));
                if known.is_own(key) || treatment(key).is_some() {
                    pairs.push((key.to_owned(), Some(value)));
                } else if strict {
                    return Err(bad(format!(
                        "unknown option {key:?} (without --strict it would define a placeholder)"
                    )));
                } else {
                    placeholders.insert(key.to_owned(), value);
                }
            }
        }
    }
    Ok((pairs, keys))
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
                b'k' => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .to_string(),
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

/// mercy's own options, from clap's definition.
struct KnownOptions {
    command: clap::Command,
}

impl KnownOptions {
    fn new() -> Self {
        Self {
            command: Options::command(),
        }
    }

    fn find(&self, name: &str) -> Option<&clap::Arg> {
        self.command.get_arguments().find(|arg| {
            arg.get_long() == Some(name) || arg.get_all_aliases().is_some_and(|a| a.contains(&name))
        })
    }

    fn is_own(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn takes_value(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|arg| arg.get_action().takes_values())
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
            let Some(found) = treatment(&name).filter(|_| !self.is_own(&name)) else {
                kept.push(arg);
                continue;
            };
            if inline_value.is_none() && args.peek().is_some_and(|next| !next.starts_with('-')) {
                args.next();
            }
            notices.push(match found {
                Treatment::AlreadySo(why) => Notice::AlreadySo { option: name, why },
                Treatment::Unsupported(instead) => Notice::Unsupported {
                    option: name,
                    instead,
                },
            });
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
}
