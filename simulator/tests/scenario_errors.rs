//! A bad scenario file is refused with the field and its allowed range.

use greenlight_sim::{Scenario, ScenarioError};

#[test]
fn out_of_range_field_is_named_with_its_range() {
    let err = Scenario::from_toml("[app]\nadoption = 1.5\n").expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, ScenarioError::OutOfRange { .. }), "{text}");
    assert!(text.contains("app.adoption"), "{text}");
    assert!(text.contains("1.5"), "{text}");
    assert!(text.contains("0 to 1"), "{text}");

    let err = Scenario::from_toml("days = 0\n").expect_err("refused");
    assert!(
        err.to_string().contains("days = 0") && err.to_string().contains("1 to 3650"),
        "{err}"
    );

    let err = Scenario::from_toml("[app]\nred_threshold_minutes = 5\n").expect_err("refused");
    assert!(
        err.to_string().contains("app.red_threshold_minutes"),
        "{err}"
    );
    assert!(err.to_string().contains("10 to 1440"), "{err}");
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let err = Scenario::from_toml("[app]\nadopton = 0.5\n").expect_err("refused");
    assert!(err.to_string().contains("adopton"), "{err}");
    let err = Scenario::from_toml("[app]\nmode = \"loud\"\n").expect_err("refused");
    assert!(err.to_string().contains("mode"), "{err}");
    let err = Scenario::from_toml("[population]\nagents = \"many\"\n").expect_err("refused");
    assert!(err.to_string().contains("agents"), "{err}");
}

#[test]
fn the_cli_reports_the_bad_field() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[testing]\nsensitivity = 2\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_greenlight-sim"))
        .args(["--quiet", "run", "--scenario"])
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run greenlight-sim");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("testing.sensitivity = 2 is out of range, allowed 0 to 1"),
        "{stderr}"
    );
}

#[test]
fn shipped_scenarios_and_defaults_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2);
    let defaults = Scenario::default();
    assert_eq!(
        Scenario::from_toml(&defaults.to_toml()).expect("round trip"),
        defaults
    );
}
