//! `--pythonpath` entries: a folder, or a glob pattern naming several, as
//! uWSGI reads them.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The `--pythonpath` entries with each glob pattern replaced by the paths
/// it matches, in sorted order, and the patterns that matched nothing.
///
/// An entry without `*`, `?` or `[` is kept as given, whether it exists or
/// not. Matches that are files are kept too: a zip or egg file on
/// `sys.path` is importable, and uWSGI adds them as well.
pub fn expand(entries: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut folders = Vec::with_capacity(entries.len());
    let mut unmatched = Vec::new();
    for entry in entries {
        if !is_pattern(&entry) {
            folders.push(entry);
            continue;
        }
        let matches = glob(&entry);
        if matches.is_empty() {
            unmatched.push(entry);
        } else {
            folders.extend(matches);
        }
    }
    (folders, unmatched)
}

/// Warns, once per pattern, that a `--pythonpath` glob matched nothing.
pub fn report_unmatched(patterns: &[PathBuf]) {
    for pattern in patterns {
        tracing::warn!(
            event = "pythonpath_unmatched",
            pattern = %pattern.display(),
            "--pythonpath {} matches no file or folder: nothing is added to sys.path for it; \
             check the pattern, or create the folders before starting mercy",
            pattern.display()
        );
    }
}

fn is_pattern(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .iter()
        .any(|byte| matches!(byte, b'*' | b'?' | b'['))
}

/// The paths `pattern` matches, in sorted order; none if it matches
/// nothing, is not a valid pattern or is not UTF-8. Entries that cannot be
/// read are left out.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let Some(pattern) = pattern.to_str() else {
        return Vec::new();
    };
    // As the shell and glob(3) match: `*` does not match a leading dot.
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::new()
    };
    let Ok(paths) = glob::glob_with(pattern, options) else {
        return Vec::new();
    };
    paths.filter_map(Result::ok).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_replaced_by_its_sorted_matches() {
        let root = std::env::temp_dir().join(format!("mercy-pythonpath-{}", std::process::id()));
        for name in ["b", "a", "c.txt"] {
            let path = root.join(name);
            if name.ends_with(".txt") {
                std::fs::create_dir_all(&root).expect("the temp folder is writable");
                std::fs::write(&path, "").expect("the temp folder is writable");
            } else {
                std::fs::create_dir_all(&path).expect("the temp folder is writable");
            }
        }
        let plain = PathBuf::from("/no/such/folder");
        let pattern = root.join("[ab]");
        let nothing = root.join("z*");

        let (folders, unmatched) = expand(vec![plain.clone(), pattern, nothing.clone()]);

        assert_eq!(folders, vec![plain, root.join("a"), root.join("b")]);
        assert_eq!(unmatched, vec![nothing]);
        std::fs::remove_dir_all(&root).expect("the temp folder is removable");
    }
}
