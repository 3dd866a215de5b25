//! Records which CPython mercy is built against, and makes the binary load
//! exactly that libpython at run time (an rpath to its library folder), so a
//! second Python with the same library name is never picked up instead.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");

    let config = pyo3_build_config::get();
    let executable = config
        .executable
        .clone()
        .expect("pyo3 found no Python interpreter: set PYO3_PYTHON");
    let facts = interpreter_facts(&executable);
    let [libdir, ldlibrary, base_prefix, version] = &facts;

    // The rpath makes the dynamic loader search the interpreter's own
    // library folder before the system's, without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    println!("cargo:rustc-env=MERCY_PYTHON_EXECUTABLE={executable}");
    println!("cargo:rustc-env=MERCY_PYTHON_LIBRARY={libdir}/{ldlibrary}");
    println!("cargo:rustc-env=MERCY_PYTHON_HOME={base_prefix}");
    println!("cargo:rustc-env=MERCY_PYTHON_VERSION={version}");
}

/// Asks the interpreter for its library folder, library file name, home and
/// version, in that order.
fn interpreter_facts(executable: &str) -> [String; 4] {
    let script = "import sys, sysconfig\n\
        v = sysconfig.get_config_var\n\
        if not v('Py_ENABLE_SHARED'):\n\
        \x20   sys.exit('this Python has no shared libpython; mercy needs one')\n\
        print(v('LIBDIR'))\n\
        print(v('INSTSONAME') or v('LDLIBRARY'))\n\
        print(sys.base_prefix)\n\
        print('%d.%d.%d' % sys.version_info[:3])\n";
    let output = Command::new(executable)
        .args(["-c", script])
        .output()
        .expect("the Python interpreter named by PYO3_PYTHON could not be run");
    if !output.status.success() {
        panic!(
            "{executable} could not describe itself: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).expect("interpreter output is UTF-8");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines
        .try_into()
        .expect("the interpreter printed four lines")
}
