//! hearth serve driven by the official `openai` and `ollama` Python packages,
//! installed by this test into a virtual environment under the cargo target
//! directory (made once, then reused). The checks themselves are
//! `tests/python/clients.py`.

#[path = "common/daemon.rs"]
mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon::{Daemon, Home};

/// Versions known to install here; the test pins them so a new release
/// cannot change what is tested.
const PACKAGES: &[&str] = &["openai==3.54.0", "ollama==0.6.3"];

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<target>/py-clients-venv`, created and filled if it is not complete.
fn venv() -> PathBuf {
    let target = Path::new(daemon::hearth_bin())
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let dir = target.join("py-clients-venv");
    let stamp = dir.join(format!("hearth-{}", PACKAGES.join("-")));
    if stamp.exists() {
        return dir;
    }
    // Built beside, then renamed into place, so a test killed half-way or
    // running concurrently never sees half an environment. (A venv's
    // interpreter finds its packages through `pyvenv.cfg` beside it, so it
    // survives the rename; pip runs as `python -m pip` for the same reason.)
    let tmp = target.join(format!("py-clients-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&tmp),
        "python3 -m venv (the client tests need python3 with venv)",
    );
    run(
        Command::new(tmp.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet"])
            .args(PACKAGES),
        "pip install of the openai and ollama packages",
    );
    std::fs::write(tmp.join(stamp.file_name().expect("stamp name")), b"").expect("venv stamp");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::rename(&tmp, &dir).is_err() && !stamp.exists() {
        panic!("could not move the client venv into {}", dir.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    dir
}
#[test]
fn official_python_clients_work_unchanged() {
    let py = venv().join("bin/python");
    let home = Home::with_models(&["smollm2", "minilm"]);
    let token = home.add_app("py-clients", &[]);
    let gemma_only = home.add_app("gemma-only", &["--models", "gemma3"]);
    let d = Daemon::start(&home, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients.py");
    let out = Command::new(py)
        .arg(script)
        .env("HEARTH_URL", &d.url)
        .env("HEARTH_TOKEN", &token)
        .env("HEARTH_GEMMA_ONLY_TOKEN", &gemma_only)
        .output()
        .expect("running the client checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client checks failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(stdout.contains("all client checks passed"), "{stdout}");
}
