//! The store and app verbs as scripts use them: `app add` prints the token
//! alone on the last stdout line, `--json` forms parse, and bad input is a
//! clear non-zero error. Everything runs in a temporary HEARTH_HOME with
//! files the test writes, so nothing here needs the network.

#[path = "common/cli.rs"]
mod cli_common;
use cli_common::fails_with;

use std::path::Path;
use std::process::{Command, Output};

use hearth_gguf::{GgufWriter, Value};
use serde_json::Value as Json;

fn hearth(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env("HEARTH_HOME", home)
        .output()
        .expect("hearth runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn json(out: &Output) -> Json {
    let s = stdout(out);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A small but well-formed GGUF file.
fn gguf(path: &Path) {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add("general.name", Value::String("cli-store-test".into()));
    w.add_f32("t.weight", &[8], &[0.5; 8]).expect("tensor");
    w.write(path).expect("write gguf");
}

#[test]
fn app_add_prints_the_token_last_and_the_rest_parses() {
    let d = tempfile::tempdir().expect("tempdir");
    let home = d.path();
    let out = hearth(
        home,
        &[
            "app",
            "add",
            "notes",
            "--models",
            "smollm2,minilm",
            "--max-concurrent",
            "2",
            "--tokens-per-minute",
            "5000",
            "--priority",
            "-1",
            "--uid",
            "4242",
        ],
    );
    let text = stdout(&out);
    let token = text.lines().last().expect("a last line").to_string();
    assert!(token.starts_with("hth_"), "{text}");
    assert_eq!(token.len(), 4 + 64, "{token}");
    assert!(token[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert!(text.ends_with('\n'));

    let list = json(&hearth(home, &["app", "list", "--json"]));
    let apps = list.as_array().expect("array");
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["name"], "notes");
    assert_eq!(apps[0]["models"], serde_json::json!(["smollm2", "minilm"]));
    assert_eq!(apps[0]["max_concurrent"], 2);
    assert_eq!(apps[0]["tokens_per_minute"], 5000);
    assert_eq!(apps[0]["priority"], -1);
    assert_eq!(apps[0]["uid"], 4242);
    assert!(
        !list.to_string().contains(&token),
        "the token is never shown again"
    );

    let show = json(&hearth(home, &["app", "show", "notes", "--json"]));
    assert_eq!(show["app"]["name"], "notes");
    assert_eq!(show["usage"]["requests"], 0);
    let table = stdout(&hearth(home, &["app", "list"]));
    assert!(table.contains("notes"), "{table}");

    // A second app's token differs; --json gives it as a field.
    let second = json(&hearth(home, &["app", "add", "other", "--json"]));
    let t2 = second["token"].as_str().expect("token field");
    assert!(t2.starts_with("hth_") && t2 != token);
    assert_eq!(second["app"]["models"], Json::Null);

    fails_with(
        &hearth(home, &["app", "add", "notes"]),
        &["`notes` already exists"],
    );
    fails_with(
        &hearth(home, &["app", "add", "bad name"]),
        &["invalid app name"],
    );

    let rm = json(&hearth(home, &["app", "rm", "notes", "--json"]));
    assert_eq!(rm["removed"], "notes");
    fails_with(
        &hearth(home, &["app", "rm", "notes"]),
        &["no app named `notes`"],
    );
    fails_with(
        &hearth(home, &["app", "show", "notes"]),
        &["no app named `notes`"],
    );
    let left = json(&hearth(home, &["app", "list", "--json"]));
    assert_eq!(left.as_array().map(Vec::len), Some(1));
}

#[test]
fn import_list_show_rm() {
    let d = tempfile::tempdir().expect("tempdir");
    let home = d.path().join("home");
    let file = d.path().join("tiny.gguf");
    gguf(&file);
    let f = file.to_str().expect("utf-8 path");

    assert_eq!(
        json(&hearth(&home, &["list", "--json"])),
        serde_json::json!([])
    );

    let imported = json(&hearth(&home, &["import", f, "--name", "tiny", "--json"]));
    assert_eq!(imported["manifest"]["name"], "tiny");
    assert_eq!(imported["method"], "linked");
    let size = std::fs::metadata(&file).expect("stat").len();
    assert_eq!(imported["manifest"]["size"], size);
    let digest = imported["manifest"]["digest"]
        .as_str()
        .expect("digest")
        .to_string();

    // A second name for the same file stores nothing new.
    let again = json(&hearth(
        &home,
        &["import", f, "--name", "tiny2", "--copy", "--json"],
    ));
    assert_eq!(again["method"], "deduplicated");
    fails_with(
        &hearth(&home, &["import", f, "--name", "tiny"]),
        &["`tiny` already exists", "--force"],
    );

    let list = json(&hearth(&home, &["list", "--json"]));
    let names: Vec<_> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["tiny", "tiny2"]);
    assert_eq!(list[0]["digest"], digest.as_str());

    let table = stdout(&hearth(&home, &["list"]));
    let header = table.lines().next().expect("header");
    for col in ["NAME", "SIZE", "DIGEST", "CREATED"] {
        assert!(header.contains(col), "{table}");
    }
    let hex = digest.trim_start_matches("sha256:");
    assert!(table.contains(&hex[..12]), "{table}");

    let show = json(&hearth(&home, &["show", "tiny", "--json"]));
    assert_eq!(show["manifest"]["name"], "tiny");
    assert_eq!(show["size"], size);
    assert_eq!(show["present"], true);
    let path = show["path"].as_str().expect("path");
    assert!(path.ends_with(&format!("blobs/sha256-{hex}")), "{path}");
    let text = stdout(&hearth(&home, &["show", "tiny"]));
    assert!(text.contains(path), "{text}");

    let rm = json(&hearth(&home, &["rm", "tiny", "--json"]));
    assert_eq!(rm["freed"], serde_json::json!([]), "tiny2 still uses it");
    assert!(Path::new(path).exists());
    let rm = stdout(&hearth(&home, &["rm", "tiny2"]));
    assert!(rm.contains("removed tiny2"), "{rm}");
    assert!(!Path::new(path).exists());
    assert_eq!(
        json(&hearth(&home, &["list", "--json"])),
        serde_json::json!([])
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let home = d.path().join("home");

    fails_with(
        &hearth(&home, &["rm", "nothing-here"]),
        &["no model `nothing-here`"],
    );
    fails_with(
        &hearth(&home, &["show", "nothing-here"]),
        &["no model `nothing-here`"],
    );

    let text = d.path().join("notes.gguf");
    std::fs::write(&text, "just some text, not a model\n").expect("write");
    let t = text.to_str().expect("utf-8");
    fails_with(
        &hearth(&home, &["import", t, "--name", "notes"]),
        &["notes.gguf", "not a usable GGUF file"],
    );
    fails_with(
        &hearth(&home, &["import", "/nonexistent/x.gguf", "--name", "x"]),
        &["/nonexistent/x.gguf", "does not exist"],
    );
    let good = d.path().join("good.gguf");
    gguf(&good);
    let g = good.to_str().expect("utf-8");
    fails_with(
        &hearth(&home, &["import", g, "--name", "smollm2"]),
        &["`smollm2` is the name of a default model"],
    );
    fails_with(
        &hearth(&home, &["import", g, "--name", "../escape"]),
        &["invalid model name `../escape`"],
    );
    // Nothing was stored by any of these.
    assert_eq!(
        json(&hearth(&home, &["list", "--json"])),
        serde_json::json!([])
    );
    assert!(std::fs::read_dir(home.join("blobs"))
        .expect("blobs dir")
        .next()
        .is_none());
}
