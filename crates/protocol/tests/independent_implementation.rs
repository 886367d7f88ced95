//! Runs the independent Python implementation of the spec
//! (`protocol-spec/reference/check_vectors.py`) against the frozen vectors.
//! It shares no code with this crate: agreement shows the spec alone is
//! enough to interoperate. CI installs its one dependency (`cryptography`);
//! elsewhere a missing Python is reported loudly and the check is skipped.

use std::path::Path;
use std::process::Command;

#[test]
fn python_reference_agrees_with_the_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("protocol-spec/reference/check_vectors.py");
    let python = std::env::var("GREENLIGHT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = Command::new(&python)
        .args(["-c", "import cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ready {
        let msg = format!(
            "{python} with the `cryptography` package is not available; install it with \
             `pip install -r protocol-spec/reference/requirements.txt`"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (required in CI)");
        }
        eprintln!("\n*** SKIPPED independent implementation check: {msg} ***\n");
        return;
    }
    let out = Command::new(&python)
        .arg(&script)
        .arg(root.join("protocol-spec/vectors"))
        .output()
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python reference disagrees with the vectors:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
