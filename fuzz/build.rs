//! Makes the fuzz binaries load the libpython mercy was built against.
//!
//! mercy's own build script adds an rpath to the interpreter's library
//! folder, but a `rustc-link-arg` reaches only the targets of the package
//! that emits it, not the binaries of a package that depends on it. The
//! mercy library links libpython through pyo3, so without this the fuzz
//! binaries would not start, or would load another Python with the same
//! library name (DESIGN.md section 2, "Which Python").

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");

    let config = pyo3_build_config::get();
    let executable = config
        .executable
        .clone()
        .expect("pyo3 found no Python interpreter: set PYO3_PYTHON");
    let output = Command::new(&executable)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ])
        .output()
        .expect("the Python interpreter named by PYO3_PYTHON could not be run");
    assert!(
        output.status.success(),
        "{executable} could not name its library folder"
    );
    let libdir = String::from_utf8(output.stdout).expect("the folder name is UTF-8");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", libdir.trim());
}
